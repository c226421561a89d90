"""`ssl-benthic make-shards`: its flags (the run is `make_shards.py`, imported only when the
command runs)."""

from __future__ import annotations

import argparse

from ssl_benthic.core.flags import bounded
from ssl_benthic.data.points import add_format_flags, add_input_flags

__all__ = ["add_make_shards"]

# what make-shards' --csv and --folder do with the point formats' flags (for their help)
TABLE_FLAG_USES = {
    "image_column": "--csv: image",
    "encoding": "--csv",
    "head": "--folder: the head of its class labels, default label",
}


def add_make_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-shards",
        help="write webdataset tar shards from a CSV, a folder tree or a point annotation export",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV with an image path column and label columns")
    src.add_argument("--folder", help="folder tree, one class per sub-folder")
    add_input_flags(src)
    p.add_argument(
        "--images-root",
        default=None,
        help="root that the CSV's image paths are relative to (default: the CSV's folder)",
    )
    p.add_argument(
        "--out", required=True, help="output folder for NAME-000000.tar ... and manifest.json"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (only once the new shards are complete)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse rows without an image file before writing; exit 1 if an image does not decode",
    )
    p.add_argument("--name", default="shard", help="shard file prefix")
    p.add_argument(
        "--label-columns",
        default="catami_biota=biota,catami_substrate=substrate,catami_relief=relief,catami_bedforms=bedforms",
        help="CSV columns to label heads, as column=head pairs separated by commas",
    )
    p.add_argument(
        "--label-sep", default="|", help="separator of several labels inside one CSV cell"
    )
    add_format_flags(p, also=TABLE_FLAG_USES)
    p.add_argument(
        "--patch",
        type=bounded(int, lambda v: v >= 1, ">= 1"),
        default=224,
        help="side of the square patch cut around each point, in image pixels (a Patch Size "
        "column overrides it per point)",
    )
    p.add_argument(
        "--patch-format",
        choices=("jpg", "png"),
        default="jpg",
        help="store patches as JPEG quality 95 (default) or PNG",
    )
    p.add_argument(
        "--split",
        default=None,
        help="write OUT/{train,val,test}/ by whole groups, e.g. train=0.7,val=0.15,test=0.15; "
        "'partition' (or any value, when the CSV has a partition column) follows that column",
    )
    p.add_argument(
        "--group-by",
        default="image",
        help="with --split: column whose groups stay in one split (default: image; e.g. site, dive)",
    )
    p.add_argument(
        "--max-shard-mb",
        type=bounded(float, lambda v: v > 0, "> 0"),
        default=256.0,
        help="upper bound of one shard's size",
    )
    p.add_argument(
        "--max-per-shard",
        type=bounded(int, lambda v: v >= 1, ">= 1"),
        default=10000,
        help="upper bound of samples per shard",
    )
    p.add_argument(
        "--resize",
        type=bounded(int, lambda v: v >= 0, ">= 0 (0 keeps the size)"),
        default=0,
        help="resize the short side to this (0 keeps); point patches to PX x PX",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the deterministic shuffle and of --split"
    )
    p.add_argument(
        "--workers",
        type=bounded(int, lambda v: v >= 1, ">= 1"),
        default=1,
        help="processes that decode, resize and encode images (the shards are byte-identical "
        "whatever the number; about one per core)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the finished shards that an interrupted run of the same command left in "
        ".OUT.partial-PID beside --out (each re-checked by sha256); write the rest",
    )
    p.set_defaults(handler="ssl_benthic.data.sources.make_shards:cli_make_shards")
