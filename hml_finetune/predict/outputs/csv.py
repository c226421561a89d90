"""`--format csv`: one row per image (or point) and head: key, image, [row, column,] head, label,
label_rule, probability, depth, predicted (the coherent predicted set, joined by '|'), top_k (the
k most probable leaves as 'path:p'), error (an image that could not be read: one row, no head)."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

from hml_finetune.predict.writers import WriteContext, Writer, place

if TYPE_CHECKING:
    from hml_finetune.predict.inputs import Item
    from hml_finetune.predict.labels import HeadPrediction

__all__ = ["WRITER", "CsvWriter"]


class CsvWriter(Writer):
    name = "csv"
    help = "one row per image (or point) and head"

    def __init__(self, ctx: WriteContext) -> None:
        super().__init__(ctx)
        columns = ["key", "image", *(["row", "column"] if self.points else []), "head", "label"]
        columns += ["label_rule", "probability", "depth", "predicted", "top_k", "error"]
        self.csv = csv.DictWriter(self.fh, fieldnames=columns)
        self.csv.writeheader()

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        base = place(item, self.points)
        if item.error is not None:
            self.csv.writerow({**base, "error": item.error})
            return
        for head, p in heads.items():
            row = {"head": head, "label": p.label, "label_rule": p.label_rule}
            row["probability"] = f"{p.probability:.6f}"
            row.update(depth=p.depth, predicted="|".join(p.predicted), top_k=top[head])
            self.csv.writerow({**base, **row, "error": ""})


WRITER = CsvWriter
