"""What every `hml-finetune predict` writer shares: the file written beside its destination and
moved into place when complete (so an interrupted run never leaves half a file under the name a
tool will read) and the context a writer opens with (write-backs rank their label codes with
`suggestions.rank_codes`). The writers themselves are one file each in `predict/outputs/`, behind
its registry.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

if TYPE_CHECKING:  # the CLI builds --format from the writers: keep the import light
    from hml_finetune.finetune.inference import Finetuned
    from hml_finetune.predict.inputs import Item
    from hml_finetune.predict.labels import HeadPrediction
    from ssl_benthic.data.points.base import PointFormat

__all__ = ["Export", "WriteContext", "Writer", "place"]


@dataclass(frozen=True)
class Export:
    """The point export the run reads: its format, file and the format's options."""

    format: PointFormat
    path: Path
    options: dict


@dataclass(frozen=True)
class WriteContext:
    """What a writer may use: the destination, whether inputs are points, `--top-k`, the run's
    label rule(s), the model (label map in `model.meta`, schemes) and the point export read."""

    path: Path
    points: bool
    top_k: int = 5
    rule: str = ""
    model: Finetuned | None = None
    export: Export | None = None


def place(item: Item, points: bool) -> dict[str, Any]:
    """key, image [, row, column] of an item."""
    out: dict[str, Any] = {"key": item.key, "image": item.image}
    if points:
        out.update(row=item.row, column=item.column)
    return out


class Writer:
    """Base: a temporary file next to `ctx.path`, renamed to it by `close()`. A writer file sets
    `name` (its `--format`) and `help`, and may refuse a command line in `check`."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def __init__(self, ctx: WriteContext) -> None:
        self.ctx, self.path, self.points = ctx, ctx.path, ctx.points
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: TextIO = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115

    @classmethod
    def check(cls, args: argparse.Namespace) -> None:
        """Refuse (ConfigError) a command line this writer cannot serve; before any work."""

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)
