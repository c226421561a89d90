"""The `ssl-benthic` command: sample data, shards, pretraining and export.

Each sub-command's work lives in its own module and is imported only when that command runs, so
`ssl-benthic --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ssl_benthic.config import ConfigError


def _add_make_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-sample", help="draw the synthetic seafloor sample and write it as shards"
    )
    p.add_argument(
        "--out", required=True, help="output folder (one sub-folder of shards per split)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-unlabelled", type=int, default=2000, help="images in the unlabelled split")
    p.add_argument("--n-labelled", type=int, default=1200, help="images in train+val+test")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument(
        "--shallow-fraction",
        type=float,
        default=0.2,
        help="share of labelled images annotated only to a shallower level",
    )
    p.add_argument(
        "--unannotated-fraction",
        type=float,
        default=0.1,
        help="share of labelled images that leave one head unannotated",
    )
    p.set_defaults(handler="ssl_benthic.data.sample:cli_make_sample")


def _add_make_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-shards", help="write webdataset tar shards from a CSV or a folder tree"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV with an image path column and label columns")
    src.add_argument("--folder", help="folder tree, one class per sub-folder")
    p.add_argument(
        "--images-root", default=None, help="root that the CSV's image paths are relative to"
    )
    p.add_argument(
        "--out", required=True, help="output folder for NAME-000000.tar ... and manifest.json"
    )
    p.add_argument("--name", default="shard", help="shard file prefix")
    p.add_argument("--image-column", default="image", help="CSV column with the image path")
    p.add_argument(
        "--label-columns",
        default="catami_biota=biota,catami_substrate=substrate,catami_relief=relief,catami_bedforms=bedforms",
        help="CSV columns to label heads, as column=head pairs separated by commas",
    )
    p.add_argument(
        "--label-sep", default="|", help="separator of several labels inside one CSV cell"
    )
    p.add_argument("--head", default="label", help="head name for --folder class labels")
    p.add_argument(
        "--max-shard-mb", type=float, default=256.0, help="upper bound of one shard's size"
    )
    p.add_argument(
        "--max-per-shard", type=int, default=10000, help="upper bound of samples per shard"
    )
    p.add_argument("--resize", type=int, default=0, help="resize the short side to this (0 keeps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic shuffle")
    p.set_defaults(handler="ssl_benthic.data.shards:cli_make_shards")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-shards", help="check every shard's sha256 and that every image decodes"
    )
    p.add_argument("dir", help="folder with manifest.json (or a folder of such folders)")
    p.set_defaults(handler="ssl_benthic.data.shards:cli_verify_shards")


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="counts per split, head and depth of a shard folder")
    p.add_argument("dir", help="folder with manifest.json (or a folder of such folders)")
    p.set_defaults(handler="ssl_benthic.data.summary:cli_summary")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining from a YAML recipe")
    p.add_argument(
        "--config", required=True, help="YAML recipe, e.g. configs/pretrain/byol_sample.yaml"
    )
    p.add_argument("--resume", default=None, help="'last' or a checkpoint path to carry on from")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the recipe")
    p.set_defaults(handler="ssl_benthic.train:cli_pretrain")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint's backbone as timm safetensors + JSON")
    p.add_argument("checkpoint", help="a pretraining checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(handler="ssl_benthic.export:cli_export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-benthic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_make_sample,
        _add_make_shards,
        _add_verify,
        _add_summary,
        _add_pretrain,
        _add_export,
    ):
        add(sub)
    return parser


def run_handler(args: argparse.Namespace) -> int:
    """Import `module:function` named by the sub-command and call it with the parsed arguments."""
    module_name, func_name = args.handler.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
