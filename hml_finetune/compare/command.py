"""`hml-finetune compare`: its flags (the run is `run.py`, imported only when the command runs)."""

from __future__ import annotations

import argparse

from hml_finetune.compare.share import parse_share

__all__ = ["add_compare"]


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="grid of starting points x modes x losses x seeds, with a report"
    )
    p.add_argument("--config", required=True, help="e.g. configs/finetune/compare_sample.yaml")
    p.add_argument(
        "--cells",
        type=parse_share,
        default=None,
        metavar="I/N",
        help="run the I-th of N shares of the cells (one task of a job array; the task that "
        "finishes the last cell writes the report)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(handler="hml_finetune.compare.run:cli_compare")
