"""`ssl-benthic make-shards`: the command line over the sources (`sources`: a CSV or a folder tree;
`point_sources`: CoralNet and SQUIDLE+ exports), then `verify-shards` on what was written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_benthic.core.errors import UserError
from ssl_benthic.data.shards.parallel import sigterm_raises
from ssl_benthic.data.shards.verify import cli_verify_shards
from ssl_benthic.data.sources.point_shards import (
    make_shards_from_coralnet,
    make_shards_from_squidle,
)
from ssl_benthic.data.sources.tables import (
    make_shards_from_csv,
    make_shards_from_folder,
    parse_label_columns,
    skip_line,
)

FILE_CHUNK = 8  # images per task sent to a worker


def ignored_line(ignored: dict[str, int]) -> str:
    """'skipped 3 files: 2 .txt, 1 hidden' (largest first), or '' when nothing was ignored."""
    if not ignored:
        return ""
    kinds = sorted(ignored.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"skipped {sum(ignored.values())} files: " + ", ".join(f"{n} {k}" for k, n in kinds)


def _print_skips(source: dict) -> None:
    """Print what the run left out: ignored files by kind, then each skipped row or file."""
    if line := ignored_line(source.get("ignored", {})):
        print(line)
    skipped = source.get("skipped", [])
    if skipped:
        print(f"skipped {len(skipped)} images (listed in the manifest's source.skipped):")
        for entry in skipped:
            print(f"  {skip_line(entry)}")


def _options(args: argparse.Namespace) -> dict:
    """The `WriteOptions` of the command line."""
    return {
        "resize": args.resize,
        "seed": args.seed,
        "name": args.name,
        "max_per_shard": args.max_per_shard,
        "max_shard_bytes": int(args.max_shard_mb * 2**20),
        "overwrite": args.overwrite,
        "split": args.split,
        "group_by": args.group_by or "image",
        "workers": args.workers,
        "resume": args.resume,
    }


def _point_options(args: argparse.Namespace) -> dict:
    """What both point exports take from the command line, besides `WriteOptions`."""
    return {
        "patch": args.patch,
        "patch_format": args.patch_format,
        "encoding": args.encoding,
        "strict": args.strict,
    }


def _make(args: argparse.Namespace) -> dict:
    """Run the source the command line names; its manifest."""
    options = _options(args)
    csv = args.csv or args.coralnet or args.squidle
    root = args.images_root or (str(Path(csv).parent) if csv else None)
    if args.label_map and not args.coralnet:
        raise UserError("--label-map maps CoralNet label codes; use it with --coralnet")
    if args.coralnet or args.squidle:
        if args.coralnet:
            return make_shards_from_coralnet(
                args.coralnet,
                root,
                args.out,
                label_map=args.label_map,
                image_column=args.image_column or "Name",
                **_point_options(args),
                **options,
            )
        return make_shards_from_squidle(
            args.squidle,
            root,
            args.out,
            image_column=args.image_column or "point.media.key",
            lineage_sep=args.lineage_sep,
            head=args.head,
            **_point_options(args),
            **options,
        )
    if args.csv:
        return make_shards_from_csv(
            args.csv,
            root,
            args.out,
            image_column=args.image_column or "image",
            label_columns=parse_label_columns(args.label_columns),
            label_sep=args.label_sep,
            encoding=args.encoding,
            strict=args.strict,
            **options,
        )
    return make_shards_from_folder(args.folder, args.out, head=args.head or "label", **options)


def _print_written(manifest: dict, out: str) -> None:
    """'wrote N samples in K shards to OUT', and one line per split of a split set."""
    splits = manifest.get("splits")
    if splits is None:
        print(
            f"wrote {manifest['num_samples']} samples in {len(manifest['shards'])} shards to {out}"
        )
        return
    for name, entry in splits.items():
        groups = manifest["split"]["groups"].get(name, 0)
        print(
            f"{name:<6} {entry['num_samples']:>8} samples {groups:>6} groups "
            f"{entry['num_shards']:>4} shards"
        )
    print(f"wrote {manifest['num_samples']} samples in {len(splits)} splits to {out}")


def cli_make_shards(args: argparse.Namespace) -> int:
    """`ssl-benthic make-shards`: shard a CSV, a folder tree or a point export, report what was
    skipped, verify. Exit 0; 1 when verification fails, or with `--strict` when an image was skipped."""
    with sigterm_raises():  # a SIGTERM stops the workers and keeps finished shards, as Ctrl-C
        manifest = _make(args)
    _print_written(manifest, args.out)
    _print_skips(manifest["source"])
    workers = args.workers
    status = cli_verify_shards(argparse.Namespace(dir=args.out, workers=workers))
    if args.strict and manifest["source"]["skipped"]:
        print(f"FAILED (--strict): {len(manifest['source']['skipped'])} images could not be read")
        return 1
    return status
