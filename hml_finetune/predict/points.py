"""Points of a point export (any format of `ssl_benthic.data.points`) as `predict` inputs: each
point's patch cut exactly as `make-shards` cuts it (`ssl_benthic.data.points.patches`: centred
square, reflect-padded, optionally resized), each photograph decoded once; a whole-frame point
(SQUIDLE+) predicts the whole image. The export is read by the format's own reader, with the same
flags `make-shards` takes to read it (`--image-column`, `--encoding`).

A missing or unreadable photograph, or a point outside it, gives error rows, never a stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby
from pathlib import Path

import torch
from PIL import Image

from hml_finetune.predict.inputs import Item
from ssl_benthic.data.points import point_format
from ssl_benthic.data.points.base import Point
from ssl_benthic.data.points.patches import cut_patch, read_upright, resize_patch
from ssl_benthic.data.sources.tables import inside_root

__all__ = ["read_points", "point_batches", "point_key"]


def read_points(kind: str, csv_path: str, flags: dict | None = None) -> list[Point]:
    """The points of a `kind` export read with `flags` (by dest; missing: the format's defaults);
    rows without an image are dropped (they have no place to predict)."""
    fmt = point_format(kind)
    points, _ = fmt.read(Path(csv_path), fmt.options(flags or {}))
    return points


def point_key(image: str, row: int | None, column: int | None) -> str:
    """How a point is named in the output: `image@row,column` (the image alone for a whole frame)."""
    return image if row is None else f"{image}@{row},{column}"


def _views(
    point: Point, image: Image.Image, array, patch: int, resize: int
) -> tuple[Item, Image.Image | None]:
    """The item and the view (patch or whole frame) of one point; an error item when it lies
    outside the photograph."""
    height, width = array.shape[:2]
    where = point.pixel(height, width)
    if where is None:
        return Item(point.image, point.image), image
    row, column = where
    item = Item(point_key(point.image, row, column), point.image, row, column)
    if not (0 <= row < height and 0 <= column < width):
        item.error = f"point (row {row}, column {column}) is outside the {height} x {width} image"
        return item, None
    cut = cut_patch(array, row, column, point.patch or patch)
    return item, Image.fromarray(resize_patch(cut, resize) if resize else cut)


def _image_views(
    points: list[Point], root: Path, patch: int, resize: int
) -> Iterator[tuple[Item, Image.Image | None]]:
    """Every point of one photograph with its view; all error items when it cannot be read."""
    try:
        array = read_upright(inside_root(root, points[0].image, "points"))
    except Exception as exc:  # noqa: BLE001 - missing, unreadable, escaping: error rows
        for p in points:
            yield (
                Item(point_key(p.image, p.row, p.column), p.image, p.row, p.column, str(exc)),
                None,
            )
        return
    image = Image.fromarray(array)
    for point in points:
        yield _views(point, image, array, patch, resize)


def point_batches(
    points: list[Point],
    images_root: str,
    transform: Callable,
    batch_size: int,
    patch: int,
    resize: int = 0,
) -> Iterator[tuple[list[Item], torch.Tensor | None]]:
    """(items, views) batches in the export's image order; failed items carry an `error`."""
    items: list[Item] = []
    views: list[torch.Tensor] = []
    for _, group in groupby(points, key=lambda p: p.image):
        for item, view in _image_views(list(group), Path(images_root), patch, resize):
            items.append(item)
            if view is not None:
                views.append(transform(view))
            if len(items) == batch_size:
                yield items, torch.stack(views) if views else None
                items, views = [], []
    if items:
        yield items, torch.stack(views) if views else None
