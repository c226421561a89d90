"""`ssl-benthic verify-shards` and `summary`: their flags (the runs are `verify.py` and
`summary.py`, imported only when the command runs)."""

from __future__ import annotations

import argparse

from ssl_benthic.core.flags import bounded

__all__ = ["add_summary", "add_verify_shards"]


def add_verify_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-shards",
        help="check every shard's sha256 and that every image decodes; warn about images in two splits",
    )
    p.add_argument(
        "dir",
        help="folder with manifest.json (or a folder of such folders, e.g. split folders)",
    )
    p.add_argument(
        "--workers",
        type=bounded(int, lambda v: v >= 1, ">= 1"),
        default=1,
        help="processes that check shards (about one per core)",
    )
    p.set_defaults(handler="ssl_benthic.data.shards.verify:cli_verify_shards")


def add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="counts per split, head and depth of a shard folder")
    p.add_argument("dir", help="folder with manifest.json (or a folder of such folders)")
    p.add_argument(
        "--label-sep",
        default=None,
        help="the separator between a label's levels (default: each head's own, found in its labels)",
    )
    p.set_defaults(handler="ssl_benthic.data.shards.summary:cli_summary")
