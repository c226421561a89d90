"""Label codes of an annotation tool (CoralNet's short codes) mapped to label paths and heads.

A map is a CSV with the header `code,path` and an optional `head` column. A path with a bracketed
root (`[BIOTA] > Biota > Cnidaria`) belongs to the head named by that root lowercased (`biota`); a
path without one to the row's `head` cell, else to `label`. Without a map every code is its own label
of the head `label`. The map goes into the manifest's `source.label_map` ({code: {path, head}}), so
predictions can be turned back into the tool's codes.

Paths are split by the configured separator (`--path-sep`, default ' > ') and stored with ' > '; a
path written with another one (`[SUBSTRATE]>Substrate>Sand` under ' > ') would file its code as a
flat class of `label`, so every such code is refused up front, all of them listed (`split_path`).

A point export gives one label per point, so a point whose codes fall in one head is a known negative
of every other head of the map (`negative_heads`, recorded per sample by make-shards). Where heads
can apply to the same point (a condition code on a point that also shows a biota class the annotator
did not record), the optional `overlap` column says so per code: the heads (separated by `|`) a point
with that code may also belong to, or `*` for every head; such heads are left unknown for it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ssl_benthic.core.catami import SEP, bracketed_head
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING, read_csv
from ssl_benthic.data.points.base import Labels, Point, label_counts, split_path

__all__ = ["DEFAULT_HEAD", "LabelMap", "head_of_path", "map_labels", "read_label_map"]

DEFAULT_HEAD = "label"


def head_of_path(path: str, default: str = DEFAULT_HEAD) -> str:
    """The head of a label path: its bracketed root lowercased (`[BIOTA] > ...` -> `biota`), else `default`."""
    return bracketed_head(path) or default


@dataclass(frozen=True)
class LabelMap:
    """code -> (head, path); `file` is where it came from (None: codes are their own labels)."""

    entries: dict[str, tuple[str, str]]
    file: str | None = None
    overlap: dict[str, frozenset[str]] = field(default_factory=dict)  # code -> heads, "*" = all

    def label(self, code: str) -> tuple[str, str]:
        """(head, path) of a code; without a map file, (`label`, code)."""
        if self.file is None:
            return DEFAULT_HEAD, code
        return self.entries[code]

    def heads(self) -> list[str]:
        """Every head of the map, sorted."""
        return sorted({head for head, _ in self.entries.values()})

    def negative_heads(self, codes: list[str]) -> list[str]:
        """The heads a point with `codes` is a known negative of: every head of the map that no
        code of the point falls in, less those its codes overlap with (`overlap`)."""
        if self.file is None or not codes:
            return []
        own = {self.entries[c][0] for c in codes}
        shared = set().union(*(self.overlap.get(c, frozenset()) for c in codes))
        if "*" in shared:
            return []
        return [h for h in self.heads() if h not in own and h not in shared]

    def check_codes(self, counts: Counter, where: Path) -> None:
        """Refuse codes of `where` that the map lacks, listing each with its count (largest first)."""
        if self.file is None:
            return
        missing = sorted(
            ((n, c) for c, n in counts.items() if c not in self.entries),
            key=lambda nc: (-nc[0], nc[1]),
        )
        if missing:
            listed = ", ".join(f"{c!r} ({n})" for n, c in missing)
            raise DataError(
                f"{where}: {len(missing)} label codes are not in the label map {self.file}: "
                f"{listed}; add them as code,path rows; nothing written"
            )

    def source(self) -> dict:
        """What the manifest's `source` records: the map file and {code: {path, head}}."""
        if self.file is None:
            return {"label_map": None}
        entries = {c: {"head": h, "path": p} for c, (h, p) in sorted(self.entries.items())}
        return {"label_map_file": self.file, "label_map": entries}


def _map_row(path: Path, line: int, row: dict) -> tuple[str, str, str]:
    """(code, path, default head) of one map row; an empty code or path names the row."""
    code, label = row["code"].strip(), row["path"].strip()
    if not code or not label:
        raise DataError(f"{path} row {line}: empty code or path")
    return code, label, (row.get("head") or "").strip() or DEFAULT_HEAD


def _levels(label: str, sep: str | None) -> str | None:
    """The path with its levels (split by `sep`) joined by ' > ', None when it does not parse."""
    try:
        return SEP.join(split_path(label, sep, "label map"))
    except DataError:
        return None


def read_label_map(
    path: str | Path | None, encoding: str = DEFAULT_ENCODING, sep: str | None = None
) -> LabelMap:
    """Read a `code,path[,head]` CSV, paths split by `sep` (None: ' > '); an empty code or path,
    or a code listed twice, names its row; every path not written with `sep` is listed at once."""
    if path is None:
        return LabelMap({})
    path = Path(path)
    header, rows = read_csv(path, encoding)
    if "code" not in header or "path" not in header:
        raise DataError(f"{path}: a label map needs the columns code,path (found: {header})")
    entries: dict[str, tuple[str, str]] = {}
    bad: list[str] = []
    overlap: dict[str, frozenset[str]] = {}
    for line, row in rows:
        code, label, default = _map_row(path, line, row)
        if code in entries:
            raise DataError(f"{path} row {line}: code {code!r} is listed twice")
        parsed = _levels(label, sep)
        if parsed is None:
            bad.append(f"{code!r} (row {line}: {label!r})")
        entries[code] = (head_of_path(parsed or label, default), parsed or label)
        shared = frozenset(h.strip() for h in (row.get("overlap") or "").split("|") if h.strip())
        if shared:
            overlap[code] = shared
    if bad:
        raise DataError(
            f"{path}: {len(bad)} label paths do not parse with the separator {sep or SEP!r} "
            f"(an empty level, or another separator): {', '.join(bad)}; pass --path-sep with "
            "the separator they use, or rewrite them; nothing written"
        )
    if not entries:
        raise DataError(f"{path}: the label map has no rows")
    _check_overlap(path, overlap, {h for h, _ in entries.values()})
    return LabelMap(entries, str(path), overlap)


def map_labels(points: list[Point], csv_path: Path, options: dict) -> Labels:
    """Label points whose labels are codes through `options["label_map"]` (read with the
    `path_sep` separator): codes the map lacks are refused, with their counts; each point keeps
    its codes as the metadata `label_codes`."""
    codes = read_label_map(options.get("label_map"), sep=options.get("path_sep"))
    codes.check_codes(label_counts(points), csv_path)
    for point in points:
        point.meta["label_codes"] = list(dict.fromkeys(point.labels))
        negatives = codes.negative_heads(point.meta["label_codes"])
        if negatives:  # one label per point: the map's other heads do not apply here
            point.meta["negative_heads"] = negatives

    def labels(point: Point) -> dict:
        out: dict[str, list[str]] = {}
        for code in point.labels:
            head, path = codes.label(code)
            if path not in out.setdefault(head, []):
                out[head].append(path)
        return out

    return Labels(labels, codes.source())


def _check_overlap(path: Path, overlap: dict[str, frozenset[str]], heads: set[str]) -> None:
    """An `overlap` cell naming a head the map does not have is a typo that would make that
    code's points negatives silently: refuse it, naming the code and the heads."""
    for code, shared in overlap.items():
        unknown = sorted(shared - heads - {"*"})
        if unknown:
            raise DataError(
                f"{path}: code {code!r}: overlap names head(s) {unknown} that the map does not "
                f"have (heads: {', '.join(sorted(heads))}; '*' means every head)"
            )
