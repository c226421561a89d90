"""The formats `hml-finetune predict` writes.

- `csv`: one row per image (or point) and head: key, image, [row, column,] head, label,
  label_rule, probability, depth, predicted (the coherent predicted set, joined by '|'), top_k (the
  k most probable leaves as 'path:p'), error.
- `jsonl`: one record per image (or point): {"key", "image", ["row", "column",] "heads": {HEAD:
  {"probabilities": {PATH: p, ...every node...}, "predicted": [...], "label", "label_rule",
  "probability", "depth"}}}, plus "error" for an image that could not be read.
- `coralnet` (for `--coralnet` input): the export itself with `Machine suggestion 1..k` and
  `Machine confidence 1..k` filled, ready to import into CoralNet or CoralNet-Toolbox, and a
  `Machine label rule` column naming the label rule of the run (the suggestions themselves rank
  the label-map codes by the probability that each is the point's label, `suggestions`).

A file is written beside its destination and moved into place when complete, so an interrupted run
never leaves half a file under the name a tool will read.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hml_finetune.predict.suggestions import rank_codes

if TYPE_CHECKING:  # the CLI imports FORMATS from here: keep the import light
    from hml_finetune.hml.hierarchy import Hierarchy
    from hml_finetune.hml.schemes import Scheme
    from hml_finetune.predict.inputs import Item
    from hml_finetune.predict.labels import HeadPrediction

__all__ = ["FORMATS", "open_writer", "Writer"]

FORMATS = ("csv", "jsonl", "coralnet")
RULE_COLUMN = "Machine label rule"  # coralnet format: the run's label rule


def _place(item: Item, points: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"key": item.key, "image": item.image}
    if points:
        out.update(row=item.row, column=item.column)
    return out


class Writer:
    """Base: a temporary file next to `path`, renamed to `path` by `close()`."""

    def __init__(self, path: Path, points: bool) -> None:
        self.path, self.points = path, points
        self.tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: TextIO = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class CsvWriter(Writer):
    def __init__(self, path: Path, points: bool) -> None:
        super().__init__(path, points)
        columns = ["key", "image", *(["row", "column"] if points else []), "head", "label"]
        columns += ["label_rule"]
        columns += ["probability", "depth", "predicted", "top_k", "error"]
        self.csv = csv.DictWriter(self.fh, fieldnames=columns)
        self.csv.writeheader()

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        base = _place(item, self.points)
        if item.error is not None:
            self.csv.writerow({**base, "error": item.error})
            return
        for head, p in heads.items():
            row = {"head": head, "label": p.label, "label_rule": p.label_rule}
            row["probability"] = f"{p.probability:.6f}"
            row.update(depth=p.depth, predicted="|".join(p.predicted), top_k=top[head])
            self.csv.writerow({**base, **row, "error": ""})


class JsonlWriter(Writer):
    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        record = _place(item, self.points)
        if item.error is not None:
            record.update(heads={}, error=item.error)
        else:
            record["heads"] = {
                head: {
                    "probabilities": p.probabilities,
                    "predicted": p.predicted,
                    "label": p.label,
                    "label_rule": p.label_rule,
                    "probability": p.probability,
                    "depth": p.depth,
                }
                for head, p in heads.items()
            }
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def open_writer(path: str | Path, fmt: str, points: bool, **coralnet: Any) -> Writer:
    """The writer of `fmt` for `path` (`coralnet` takes the export and the code ranking)."""
    if fmt == "coralnet":
        return CoralnetWriter(Path(path), points, **coralnet)
    cls = {"csv": CsvWriter, "jsonl": JsonlWriter}[fmt]
    return cls(Path(path), points)


def code_ranking(
    heads: dict[str, HeadPrediction],
    label_map: dict[str, dict[str, str]] | None,
    schemes: dict[str, Scheme],
    hierarchies: dict[str, Hierarchy],
) -> list[tuple[str, float]]:
    """Every label code with the probability that it is the point's label, most probable first
    (`suggestions.rank_codes`): the codes of the training shards' label map, or without one the
    classes of the head `label` (CoralNet codes used as labels)."""
    return rank_codes(heads, label_map, hierarchies, schemes)


class CoralnetWriter(Writer):
    """The input CoralNet CSV, every row and column kept, with `Machine suggestion 1..k` and
    `Machine confidence 1..k` (percent, as CoralNet writes it) filled from the prediction of the
    row's point: the k most probable label codes. Written when every point is predicted."""

    def __init__(
        self, path: Path, points: bool, *, source: str, k: int, codes: Any, rule: str = ""
    ) -> None:
        super().__init__(path, points)
        self.source, self.k, self.codes, self.rule = Path(source), k, codes, rule
        self.suggestions: dict[tuple[str, int, int], list[tuple[str, float]]] = {}

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        if item.error is None and item.row is not None:
            self.suggestions[(item.image, item.row, item.column)] = self.codes(heads)[: self.k]

    def close(self) -> None:
        from ssl_benthic.data.csv_rows import read_csv

        header, rows = read_csv(self.source)
        extra = [
            f"Machine {kind} {i}"
            for i in range(1, self.k + 1)
            for kind in ("suggestion", "confidence")
        ]
        extra.append(RULE_COLUMN)
        out = csv.DictWriter(self.fh, fieldnames=[*header, *(c for c in extra if c not in header)])
        out.writeheader()
        for _, row in rows:
            row[RULE_COLUMN] = self.rule
            key = (row["Name"].strip(), int(float(row["Row"])), int(float(row["Column"])))
            for i, (code, p) in enumerate(self.suggestions.get(key, []), 1):
                row[f"Machine suggestion {i}"] = code
                row[f"Machine confidence {i}"] = round(100 * p)
            out.writerow(row)
        super().close()
