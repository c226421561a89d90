"""`ssl-benthic embed`: its flags and its run. Imports nothing heavy until the command runs, so
building the parser stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_benthic.core.errors import UserError
from ssl_benthic.data.points import (
    add_format_flags,
    add_input_flags,
    chosen_format,
    format_flags,
    refuse_unused_flags,
)
from ssl_benthic.pretrain.config import KnnMonitorConfig

__all__ = ["add_parser", "cli_embed"]

MONITOR = KnnMonitorConfig()  # k and temperature as the pretraining kNN monitor's


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="features of images, shard samples or annotated points from any start, with kNN scores",
    )
    p.add_argument(
        "--weights",
        required=True,
        help="an export or import folder (backbone.safetensors + backbone.json), a timm model "
        "name with --weights-file, or random with --model",
    )
    p.add_argument("--model", help="--weights random: the timm model (e.g. resnet18)")
    p.add_argument("--seed", type=int, default=0, help="--weights random: the init's seed")
    p.add_argument("--weights-file", help="a local timm weights file for the timm name --weights")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (searched recursively)")
    src.add_argument("--shards", help="shard folder (with manifest.json)")
    add_input_flags(src)  # --coralnet, --squidle, --mermaid: one patch per point
    add_format_flags(p)
    p.add_argument("--images-root", help="point exports: the folder their image names are under")
    p.add_argument("--patch", type=int, default=224, help="point exports: patch side in pixels")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pool", default="cls", help="a ViT's feature: cls, mean or cls+mean")
    p.add_argument("--img-size", type=int, help="input size (default: the start's own)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--chunk-batches", type=int, default=16, help="batches per resumable chunk written to disk"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--overwrite", action="store_true", help="replace an embedding in --out")
    p.add_argument("--knn", help="labelled shard folder: kNN top-1 at each depth of each head")
    p.add_argument("--knn-k", type=int, default=MONITOR.k, help="neighbours that vote")
    p.add_argument(
        "--knn-temperature", type=float, default=MONITOR.temperature, help="vote weight exp(sim/t)"
    )
    p.set_defaults(handler="ssl_benthic.embed.command:cli_embed")


def _source(args: argparse.Namespace):  # noqa: ANN202 - a Source
    from ssl_benthic.embed.inputs import ImageSource, PointSource, ShardSource

    fmt = chosen_format(args)
    refuse_unused_flags(args, fmt, frozenset(), "--images / --shards")
    if fmt is None and args.images_root:
        raise UserError("--images-root goes with a point export (--coralnet, --squidle, --mermaid)")
    if args.images is not None:
        return ImageSource(Path(args.images))
    if args.shards is not None:
        return ShardSource(Path(args.shards))
    if args.images_root is None:
        raise UserError(f"--{fmt.name} needs --images-root (the folder its image names are under)")
    given = {dest: getattr(args, dest, None) for dest in format_flags()}
    return PointSource(
        fmt.name, Path(getattr(args, fmt.name)), Path(args.images_root), args.patch, given
    )


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--chunk-batches", args.chunk_batches)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.knn_k < 1 or args.knn_temperature <= 0:
        raise UserError("--knn-k must be >= 1 and --knn-temperature > 0")
    if args.knn is not None and args.images is not None:
        raise UserError(
            "--knn scores labelled inputs: --shards, or --coralnet (labels from its codes)"
        )


def cli_embed(args: argparse.Namespace) -> int:
    from ssl_benthic.embed.knn import format_table, knn_against
    from ssl_benthic.embed.run import embed
    from ssl_benthic.embed.start import load_start

    _check(args)
    source = _source(args)
    start = load_start(
        args.weights, args.weights_file, args.pool, args.img_size, args.model, args.seed
    )
    try:
        record = embed(
            source,
            start,
            args.out,
            batch_size=args.batch_size,
            chunk_batches=args.chunk_batches,
            dtype=args.dtype,
            device=args.device,
            overwrite=args.overwrite,
        )
    except KeyboardInterrupt:
        print(f"embed: finished chunks are kept in {args.out}; rerun the same command to resume")
        raise
    print(
        f"embedded {record['count']} views ({record['start']['num_features']} features each, "
        f"{len(record['skipped'])} skipped) into {args.out}"
    )
    for s in record["skipped"][:5]:
        print(f"  skipped {s['key']}: {s['reason']}")
    if args.knn is not None:
        rows = knn_against(
            args.out,
            args.knn,
            start,
            args.batch_size,
            args.device,
            args.knn_k,
            args.knn_temperature,
        )
        print(format_table(rows))
        print(f"kNN scores: {Path(args.out) / 'knn.json'}")
    return 0
