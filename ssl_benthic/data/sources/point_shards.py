"""Making patch shards from point annotation exports (`make-shards --coralnet / --squidle /
--mermaid`, any format of `ssl_benthic.data.points`).

One sample per point: a square patch centred on it (`patches.cut_patch`), optionally resized, as JPEG
quality 95 or PNG; a SQUIDLE+ whole-frame label gives a sample of the whole image (as `--csv` stores
images). Label codes that the label map lacks stop the run before any image is read; then every
image's header is read, so a point outside its image stops the run before anything is written. A
point whose image is missing or does not decode is skipped and listed, as the CSV source does.

Keys are `{NNNNNNNN}_{stem}_r{row}_c{col}` (`{NNNNNNNN}_{stem}` for a whole frame), NNNNNNNN the
point's place in the sorted order (image, then top to bottom, left to right). Images are shuffled by
the seed and cut in blocks of `BLOCK_IMAGES`, each image decoded once (in `workers` processes); a
block's points are shuffled before they are written, so shards mix images without decoding one
photograph per point. The order is fixed before any image is decoded (a point whose image then
fails to decode is left out of it), which is what lets `--resume` match finished shards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

from ssl_benthic.core.errors import DataError, UserError
from ssl_benthic.data.images import describe_error, encode_image
from ssl_benthic.data.points import point_format
from ssl_benthic.data.points.base import Labeler, Point
from ssl_benthic.data.points.patches import (
    PATCH_FORMATS,
    cut_patch,
    encode_patch,
    read_upright,
    resize_patch,
    upright_size,
)
from ssl_benthic.data.shards.format import ShardSample, check_key
from ssl_benthic.data.shards.parallel import ordered_map
from ssl_benthic.data.shards.progress import Plan, Skipped
from ssl_benthic.data.sources.tables import (
    Item,
    Planner,
    Tally,
    WriteOptions,
    inside_root,
    item_identity,
    no_image_read,
    refuse_strict,
    replay,
    stem_key,
    unusable,
    write_items,
)

__all__ = ["BLOCK_IMAGES", "make_point_shards", "point_key"]

BLOCK_IMAGES = 32


@dataclass(frozen=True)
class PatchSpec:
    """How points become samples: the default patch side, the patch format, the resize."""

    patch: int = 224
    patch_format: str = "jpg"
    resize: int = 0

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise UserError(f"patch must be >= 1 pixel, got {self.patch}")
        if self.patch_format not in PATCH_FORMATS:
            raise UserError(f"patch format {self.patch_format!r}: use one of {list(PATCH_FORMATS)}")


def point_key(index: int, image: str, row: int | None, column: int | None) -> str:
    """`{index:08d}_{stem}_r{row}_c{column}` (no `_r.._c..` for a whole frame); safe characters."""
    key = stem_key(index, Path(image))
    return key if row is None else check_key(f"{key}_r{row}_c{column}")


# --- images and points -> items ------------------------------------------------------------


def _image_sizes(
    points: list[Point], csv_path: Path, root: Path
) -> dict[str, tuple[Path, tuple[int, int] | str]]:
    """{image: (path, (height, width) upright, or why it cannot be used)}; reads headers only."""
    out = {}
    for point in points:
        if point.image in out:
            continue
        path = inside_root(root, point.image, f"{csv_path} row {point.line}")
        reason = unusable(path, resize=1)  # any readable format: patches are re-encoded
        if reason is None:
            try:
                reason = upright_size(path)
            except Exception as exc:  # any decoder failure is about this one file
                reason = f"cannot read image: {describe_error(exc)}"
        out[point.image] = (path, reason)
    return out


def _outside(csv_path: Path, point: Point, row: int, col: int, size: tuple[int, int]) -> None:
    """Refuse a point outside its image, naming the CSV row."""
    height, width = size
    if not (0 <= row < height and 0 <= col < width):
        raise DataError(
            f"{csv_path} row {point.line}: point (Row {row}, Column {col}) is outside "
            f"{point.image} ({width} x {height} px: Row 0..{height - 1}, Column 0..{width - 1})"
        )


def _items(
    points: list[Point], csv_path: Path, root: Path, spec: PatchSpec, labeler: Labeler, tally: Tally
) -> list[Item]:
    """An Item per point whose image can be read (meta: other columns, image, row, column, patch,
    labels); points of unusable images are skipped into `tally`, one entry each."""
    sizes = _image_sizes(points, csv_path, root)
    items = []
    for index, point in enumerate(points):
        path, size = sizes[point.image]
        if isinstance(size, str):
            tally.skip(point.line, point.image, size)
            continue
        meta = {**point.meta, "image": point.image, "labels": labeler(point)}
        pixel = point.pixel(*size)
        if pixel is not None:
            _outside(csv_path, point, *pixel, size)
            meta.update(row=pixel[0], column=pixel[1], patch=point.patch or spec.patch)
        items.append(Item(index, path, meta, point.line, point.image))
    return items


# --- items -> samples ----------------------------------------------------------------------


def _sample(item: Item, pixels: object, spec: PatchSpec) -> ShardSample:
    """One item's sample: its patch (cut, resized, encoded), or the whole image file."""
    meta = item.meta
    key = point_key(item.index, item.file, meta.get("row"), meta.get("column"))
    if "row" not in meta:
        data, ext = encode_image(item.path, spec.resize)
        return ShardSample(key, data, ext, meta)
    patch = cut_patch(pixels, meta["row"], meta["column"], meta["patch"])
    if spec.resize:
        patch = resize_patch(patch, spec.resize)
    return ShardSample(key, encode_patch(patch, spec.patch_format), spec.patch_format, meta)


def _image_results(spec: PatchSpec, unit: tuple[Path, list[Item]]) -> list[ShardSample | str]:
    """The samples of one image's items, decoded once, or why each cannot be read; runs in a worker."""
    path, items = unit
    pixels, error = None, None
    if any("row" in item.meta for item in items):
        try:
            pixels = read_upright(path)
        except Exception as exc:  # any decoder failure is about this one file
            error = f"cannot read image: {describe_error(exc)}"
    results: list[ShardSample | str] = []
    for item in items:
        if error is not None and "row" in item.meta:
            results.append(error)
            continue
        try:
            results.append(_sample(item, pixels, spec))
        except Exception as exc:  # a whole frame that does not encode
            results.append(f"cannot read image: {describe_error(exc)}")
    return results


def _by_image(items: list[Item]) -> dict[Path, list[Item]]:
    """Items grouped by their image, images in order of first appearance."""
    out: dict[Path, list[Item]] = {}
    for item in items:
        out.setdefault(item.path, []).append(item)
    return out


def _blocks(items: list[Item], seed: int) -> list[list[Item]]:
    """Images shuffled by `seed`, in blocks of BLOCK_IMAGES; each block's items shuffled."""
    by_image = _by_image(items)
    rng = random.Random(seed)
    paths = list(by_image)
    rng.shuffle(paths)
    blocks = []
    for start in range(0, len(paths), BLOCK_IMAGES):
        block = [item for path in paths[start : start + BLOCK_IMAGES] for item in by_image[path]]
        rng.shuffle(block)
        blocks.append(block)
    return blocks


def _item_key(item: Item) -> str:
    return point_key(item.index, item.file, item.meta.get("row"), item.meta.get("column"))


def _needed(blocks: list[list[Item]], start: int) -> list[tuple[list[Item], list]]:
    """For each block that reaches past place `start`: its items from there on, and those items
    grouped by image (the units to decode)."""
    needed, offset = [], 0
    for block in blocks:
        if offset + len(block) > start:
            rest = block[max(0, start - offset) :]
            needed.append((rest, list(_by_image(rest).items())))
        offset += len(block)
    return needed


def _block_events(
    blocks: list[list[Item]], start: int, spec: PatchSpec, workers: int, tally: Tally
) -> Iterator[ShardSample | Skipped]:
    """The events of places start.. of the blocks: each image needed decoded once (in `workers`
    processes, in order), a block's events in its shuffled order."""
    needed = _needed(blocks, start)
    units = (unit for _, images in needed for unit in images)
    results = ordered_map(partial(_image_results, spec), units, workers, chunksize=1)
    try:
        for block, images in needed:
            done = {}
            for (_, items), result in zip(images, islice(results, len(images)), strict=True):
                done.update(zip((item.index for item in items), result, strict=True))
            for item in block:
                yield _event(item, done[item.index], tally)
    finally:
        results.close()
    no_image_read(tally)


def _event(item: Item, result: ShardSample | str, tally: Tally) -> ShardSample | Skipped:
    """An item's sample (noted as written), or its skip (noted as skipped)."""
    if isinstance(result, str):
        tally.skip(item.row, item.file, result)
        return Skipped(_item_key(item), item.row, item.file, result)
    tally.written.append(result.meta)
    return result


def _patch_planner(spec: PatchSpec, opts: WriteOptions) -> Planner:
    """Images shuffled by the seed, cut in blocks of BLOCK_IMAGES, each block's samples shuffled."""

    def plan(items: list[Item], tally: Tally, settings: dict) -> Plan:
        blocks = _blocks(items, opts.seed)
        order = [item for block in blocks for item in block]
        keys = [_item_key(item) for item in order]
        identity = item_identity()

        def stream(start: int, skipped: list[Skipped]) -> Iterator[ShardSample | Skipped]:
            replay(zip(keys[:start], order[:start], strict=True), skipped, tally)
            return _block_events(blocks, start, spec, opts.workers, tally)

        return Plan(len(order), lambda i: identity(keys[i], order[i]), settings, stream)

    return plan


def _write_points(
    points: list[Point],
    empty_rows: list[tuple[int, str]],
    csv_path: Path,
    root: Path,
    out_dir: str | Path,
    labeler: Labeler,
    source: dict,
    spec: PatchSpec,
    opts: WriteOptions,
    strict: bool,
) -> dict:
    """Resolve the points' images, refuse (strict) or list the unusable ones, write; the manifest."""
    tally = Tally()
    for line, reason in empty_rows:
        tally.skip(line, "", reason)
    items = _items(points, csv_path, root, spec, labeler, tally)
    if strict and tally.skipped:
        refuse_strict(csv_path, tally)
    heads = sorted({h for item in items for h in item.meta["labels"]})
    source = {
        **source,
        "csv": str(csv_path),
        "images_root": str(root),
        "patch": spec.patch,
        "patch_format": spec.patch_format,
        "resize": spec.resize,
        "seed": opts.seed,
    }
    return write_items(items, out_dir, source, heads, tally, opts, _patch_planner(spec, opts))


def _spec(patch: int, patch_format: str, opts: WriteOptions) -> PatchSpec:
    return PatchSpec(patch, patch_format, opts.resize)


# --- any export ----------------------------------------------------------------------------


def make_point_shards(
    kind: str,
    csv_path: str | Path,
    images_root: str | Path,
    out_dir: str | Path,
    *,
    patch: int = 224,
    patch_format: str = "jpg",
    strict: bool = False,
    flags: dict | None = None,
    **options: object,
) -> dict:
    """Shard the points of a `kind` export (a registered format) as patches (whole-frame labels
    as whole images); return the manifest.

    `flags` are the format's own (by dest: image_column, encoding, label_map, ...; missing ones
    take the format's defaults); `options` are `WriteOptions` (resize, seed, name, shard bounds,
    overwrite, split, group_by). Bad labels (codes the label map lacks, a lineage that does not
    parse) are refused before any image is read. Every
    sample's metadata keeps the point's codes as `label_codes` and, through a label map, the map's
    heads it is a known negative of as `negative_heads` (`LabelMap.negative_heads`).
    """
    fmt = point_format(kind)
    opts = WriteOptions(**options)
    spec = _spec(patch, patch_format, opts)
    csv_path, root = Path(csv_path), Path(images_root)
    given = fmt.options(flags or {})
    points, empty = fmt.read(csv_path, given)
    labels = fmt.labels(points, csv_path, given)
    source = {"kind": fmt.name, "image_column": given["image_column"], **labels.source}
    return _write_points(
        points, empty, csv_path, root, out_dir, labels.labeler, source, spec, opts, strict
    )
