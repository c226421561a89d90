"""`ssl-benthic make-shards`: the command line over the sources (`tables`: a CSV or a folder tree;
`point_shards`: any point-export format of `ssl_benthic.data.points`), then `verify-shards` on
what was written. A format flag that the chosen source does not use is refused (`--head` with
`--coralnet`: its heads come from the label map), never ignored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_benthic.data.csv_rows import DEFAULT_ENCODING
from ssl_benthic.data.points import chosen_format, format_flags, refuse_unused_flags
from ssl_benthic.data.shards.verify import cli_verify_shards
from ssl_benthic.data.sources.point_shards import make_point_shards
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


# what the other sources take of the format flags (the rest is refused with them)
TABLE_FLAGS = {"csv": frozenset({"image_column", "encoding"}), "folder": frozenset({"head"})}


def _make_points(args: argparse.Namespace, root: str, options: dict) -> dict:
    """Shard the point export the command line names."""
    fmt = chosen_format(args)
    refuse_unused_flags(args, fmt)
    flags = {dest: getattr(args, dest) for dest in format_flags()}
    return make_point_shards(
        fmt.name,
        getattr(args, fmt.name),
        root,
        args.out,
        patch=args.patch,
        patch_format=args.patch_format,
        strict=args.strict,
        flags=flags,
        **options,
    )


def _make(args: argparse.Namespace) -> dict:
    """Run the source the command line names; its manifest."""
    options = _options(args)
    fmt = chosen_format(args)
    csv = args.csv or (getattr(args, fmt.name) if fmt else None)
    root = args.images_root or (str(Path(csv).parent) if csv else None)
    if fmt is not None:
        return _make_points(args, root, options)
    kind = "csv" if args.csv else "folder"
    refuse_unused_flags(args, None, TABLE_FLAGS[kind], f"--{kind}")
    if args.csv:
        return make_shards_from_csv(
            args.csv,
            root,
            args.out,
            image_column=args.image_column or "image",
            label_columns=parse_label_columns(args.label_columns),
            label_sep=args.label_sep,
            encoding=args.encoding or DEFAULT_ENCODING,
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
    manifest = _make(args)  # a SIGTERM (the CLI's `sigterm_raises`) stops it as Ctrl-C does
    _print_written(manifest, args.out)
    _print_skips(manifest["source"])
    workers = args.workers
    status = cli_verify_shards(argparse.Namespace(dir=args.out, workers=workers))
    if args.strict and manifest["source"]["skipped"]:
        print(f"FAILED (--strict): {len(manifest['source']['skipped'])} images could not be read")
        return 1
    return status
