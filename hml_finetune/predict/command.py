"""`hml-finetune predict`: its flags, `--format` from the writer registry (the run is `run.py`,
imported only when the command runs)."""

from __future__ import annotations

import argparse

from hml_finetune.predict.outputs import writer_help, writers
from ssl_benthic.data.points import add_format_flags, add_input_flags

__all__ = ["add_predict"]


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="label new images with a fine-tuned model (CSV or JSON lines)"
    )
    p.add_argument("--checkpoint", required=True, help="model.ckpt of `hml-finetune train`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder (searched recursively), an image file or a glob")
    src.add_argument("--shards", help="a shard folder (e.g. made by make-shards)")
    add_input_flags(src)
    p.add_argument(
        "--images-root",
        help="where the photographs of a point export are (default: the export's folder)",
    )
    add_format_flags(p, reads_only=True)
    p.add_argument(
        "--patch",
        type=int,
        default=None,
        help="patch side in pixels (default: the training patches', from model.ckpt, else 224)",
    )
    p.add_argument(
        "--resize",
        type=int,
        default=None,
        help="resize patches to this side (0: no; default: as the training patches were)",
    )
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--format", default="csv", choices=sorted(writers()), help=writer_help())
    p.add_argument("--top-k", type=int, default=5, help="most probable leaves listed per head")
    p.add_argument(
        "--label-rule",
        default=None,
        help="expected-hops, threshold or min-probability (default: the recipe's "
        "predict.label_rule; DAG schemes use threshold)",
    )
    p.add_argument(
        "--min-probability",
        type=float,
        default=None,
        help="min-probability rule: the least probability of the label (default: the recipe's)",
    )
    p.add_argument("--cover", default=None, help="write percent cover per image (points) here")
    p.add_argument("--cover-by", default=None, help="also per group of this export column")
    p.add_argument(
        "--cover-depth", type=int, action="append", help="a depth to report (repeat; default all)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4, help="loader processes decoding images")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.set_defaults(handler="hml_finetune.predict.run:cli_predict")
