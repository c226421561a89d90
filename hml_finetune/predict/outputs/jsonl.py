"""`--format jsonl`: one record per image (or point): {"key", "image", ["row", "column",] "heads":
{HEAD: {"probabilities": {PATH: p, ...every node...}, "predicted": [...], "label", "label_rule",
"probability", "depth"}}}, plus "error" (and no heads) for an image that could not be read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from hml_finetune.predict.writers import Writer, place

if TYPE_CHECKING:
    from hml_finetune.predict.inputs import Item
    from hml_finetune.predict.labels import HeadPrediction

__all__ = ["WRITER", "JsonlWriter"]


class JsonlWriter(Writer):
    name = "jsonl"
    help = "one JSON record per image (or point), every node's probability"

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        record = place(item, self.points)
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


WRITER = JsonlWriter
