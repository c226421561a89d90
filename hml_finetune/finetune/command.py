"""`hml-finetune train` and `evaluate`: their flags (the runs are `train.py` and `evaluate.py`,
imported only when the command runs)."""

from __future__ import annotations

import argparse

from ssl_benthic.core.flags import add_run_flags

__all__ = ["add_evaluate", "add_train"]


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune or linear-probe HML heads on labelled image shards")
    p.add_argument("--config", required=True, help="YAML recipe under configs/finetune/")
    add_run_flags(p)
    p.set_defaults(handler="hml_finetune.finetune.train:cli_train")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a fine-tuned checkpoint on labelled shards")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True, help="labelled shard folder")
    p.add_argument("--out", default=None, help="where to write metrics JSON and markdown")
    p.set_defaults(handler="hml_finetune.finetune.evaluate:cli_evaluate")
