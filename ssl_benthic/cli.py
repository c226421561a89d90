"""The `ssl-benthic` command: sample data, shards, pretraining and export.

Each sub-command's work lives in its own module and is imported only when that command runs, so
`ssl-benthic --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ssl_benthic.core.errors import EXIT_INTERRUPTED, Interrupted, Terminated, UserError
from ssl_benthic.data.points import add_format_flags, add_input_flags
from ssl_benthic.embed.command import add_parser as _add_embed

# what make-shards' --csv and --folder do with the point formats' flags (for their help)
TABLE_FLAG_USES = {
    "image_column": "--csv: image",
    "encoding": "--csv",
    "head": "--folder: the head of its class labels, default label",
}


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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (only once the new sample is complete)",
    )
    p.set_defaults(handler="ssl_benthic.data.sample.make_sample:cli_make_sample")


def _add_make_survey(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-survey",
        help="draw a small point-annotated survey (photos + CoralNet export) to try the workflow",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=60, help="photographs")
    p.add_argument("--size", type=int, default=128, help="photograph side in pixels")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler="ssl_benthic.data.sample.make_survey:cli_make_survey")


def bounded(kind: type, ok: object, what: str) -> object:
    """argparse type: a `kind` number that passes `ok` (`--resize -5` is refused, not 1x1)."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid int value: 'x'"
    return parse


def _add_make_shards(sub: argparse._SubParsersAction) -> None:
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


def _add_verify(sub: argparse._SubParsersAction) -> None:
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


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="counts per split, head and depth of a shard folder")
    p.add_argument("dir", help="folder with manifest.json (or a folder of such folders)")
    p.add_argument(
        "--label-sep",
        default=None,
        help="the separator between a label's levels (default: each head's own, found in its labels)",
    )
    p.set_defaults(handler="ssl_benthic.data.shards.summary:cli_summary")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining from a YAML recipe")
    p.add_argument(
        "--config", required=True, help="YAML recipe, e.g. configs/pretrain/byol_sample.yaml"
    )
    add_run_flags(p)
    p.set_defaults(handler="ssl_benthic.pretrain.run:cli_pretrain")


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


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint's backbone as timm safetensors + JSON")
    p.add_argument("checkpoint", help="a pretraining checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.set_defaults(handler="ssl_benthic.weights.export:cli_export")


def _add_import_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-weights",
        help="import a published encoder (BenthicNet, solo-learn, DINO, torchvision, timm) as an export",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="weights file (.ckpt/.pth/.pt/.safetensors) or a folder with one",
    )
    p.add_argument("--out", help="output folder for backbone.safetensors + backbone.json")
    p.add_argument(
        "--branch",
        choices=("backbone", "momentum_backbone", "teacher", "student"),
        help="the encoder of a training checkpoint to import (default: the preset's, else the "
        "evaluated one: backbone, or teacher for DINO)",
    )
    p.add_argument("--preset", help="a published encoder's settings (see --list-presets)")
    p.add_argument(
        "--list-presets", action="store_true", help="list the presets (also --preset help)"
    )
    p.add_argument("--timm-name", help="the timm model, when the keys cannot tell it")
    p.add_argument(
        "--model-kwargs",
        help="timm model kwargs as JSON, e.g. '{\"num_heads\": 12}' (a ViT-S needs its head count)",
    )
    p.add_argument("--mean", type=float, nargs=3, help="pretraining normalisation mean (R G B)")
    p.add_argument("--std", type=float, nargs=3, help="pretraining normalisation std (R G B)")
    p.add_argument(
        "--img-size",
        type=int,
        help="build a ViT for this image size (position embeddings resampled from the release's)",
    )
    p.add_argument(
        "--clip-projection",
        action="store_true",
        help="open_clip files: import the projected CLIP embedding, not the trunk's feature",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.set_defaults(handler="ssl_benthic.weights.import_weights:cli_import_weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-benthic", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_make_sample,
        _add_make_survey,
        _add_make_shards,
        _add_verify,
        _add_summary,
        _add_pretrain,
        _add_export,
        _add_import_weights,
        _add_embed,
    ):
        add(sub)
    return parser


DEBUG_ENV = "SSL_BENTHIC_DEBUG"
INTERRUPTED_ENV = "SSL_BENTHIC_INTERRUPTED"  # a file to create when a run stops on SIGTERM


def quiet_upstream() -> None:
    """Silence upstream notices that are not about the user's run: Lightning's litlogger tip and
    torch's LeafSpec deprecation (raised inside Lightning)."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_litlogger_tip)


def _no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings as `warning: MESSAGE` (the message names what it is about, not our source line)."""
    return f"warning: {message}\n"


def run_handler(args: argparse.Namespace, debug: bool = False) -> int:
    """Import `module:function` named by the sub-command and call it with the parsed arguments.

    Bad input (`UserError`, a missing or unreadable file) prints one line and returns 2; an
    interrupted run prints how to resume and returns 143; anything else prints one line and
    returns 1. `debug` (or SSL_BENTHIC_DEBUG=1) lets the exception through with its traceback.
    """
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    module_name, func_name = args.handler.split(":")
    quiet_upstream()
    formatwarning = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except Exception as exc:
        if debug:
            raise
        return _report(exc)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        if isinstance(exc, Terminated):
            print(f"interrupted by SIGTERM{': ' + exc.kept if exc.kept else ''}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


def _report(exc: Exception) -> int:
    """Print `exc` as one line; the exit status for it."""
    if isinstance(exc, Interrupted):
        print(str(exc), file=sys.stderr)
        _mark_interrupted()
        return EXIT_INTERRUPTED
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):  # a missing file, a permission, a full disk: not a bug
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"error: {type(exc).__name__}: {exc} (an internal error: rerun with --debug for the "
        "traceback and report it)",
        file=sys.stderr,
    )
    return 1


def _mark_interrupted() -> None:
    """Create the file $SSL_BENTHIC_INTERRUPTED names, when set: the sbatch scripts requeue a job
    whose run says it saved on SIGTERM (srun's status 143 alone may be a peer task it killed)."""
    path = os.environ.get(INTERRUPTED_ENV)
    if path:
        with contextlib.suppress(OSError):
            Path(path).touch()


def split_debug(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """(argv without `--debug`, whether it was there): `--debug` may stand anywhere."""
    args = list(sys.argv[1:] if argv is None else argv)
    return [a for a in args if a != "--debug"], "--debug" in args


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show tracebacks (also {DEBUG_ENV}=1); may stand anywhere on the line",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, debug = split_debug(argv)
    return run_handler(build_parser().parse_args(args), debug)


if __name__ == "__main__":
    sys.exit(main())
