"""`ssl-benthic pretrain`: its flags (the run is `run.py`, imported only when the command runs)."""

from __future__ import annotations

import argparse

from ssl_benthic.core.flags import add_run_flags

__all__ = ["add_pretrain"]


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining from a YAML recipe")
    p.add_argument(
        "--config", required=True, help="YAML recipe, e.g. configs/pretrain/byol_sample.yaml"
    )
    add_run_flags(p)
    p.set_defaults(handler="ssl_benthic.pretrain.run:cli_pretrain")
