"""argparse pieces that commands of several stages share: bounded numbers, and the flags of a
training command (`pretrain`, `hml-finetune train`). Torch-free: parsers import it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_run_flags", "bounded"]


def bounded(kind: type, ok: Callable[[object], bool], what: str) -> Callable[[str], int | float]:
    """argparse type: a `kind` number that passes `ok` (`--resize -5` is refused, not 1x1)."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid int value: 'x'"
    return parse


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--resume, --overwrite and the overrides of a training command (both stages)."""
    p.add_argument(
        "--resume",
        default=None,
        help="'last' (output_dir/checkpoints/last.ckpt) or a checkpoint path to carry on from",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output_dir that holds another run, deleting its checkpoints",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the recipe")
