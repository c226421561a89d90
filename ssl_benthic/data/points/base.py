"""Reading point annotation exports (CoralNet, CoralNet-Toolbox, SQUIDLE+) into points.

A point is one place in one image with one or more labels: rows sharing the image and the position
are one point. CoralNet gives the position in pixels (`Row`, `Column`); SQUIDLE+ as fractions of the
height and width (`point.y`, `point.x`), turned into pixels once the image size is known
(`Point.pixel`); a SQUIDLE+ row without coordinates labels the whole frame. Every column a format
does not consume is kept, from the point's first row, as metadata.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ssl_benthic.core.catami import SEP, bracketed_head
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING, read_csv

__all__ = [
    "CORALNET_LABEL_COLUMNS",
    "Point",
    "SQUIDLE_IMAGE_COLUMN",
    "SQUIDLE_LINEAGE_COLUMNS",
    "lineage_label",
    "read_coralnet",
    "read_squidle",
]

CORALNET_IMAGE_COLUMN = "Name"
CORALNET_LABEL_COLUMNS = ("Label", "Label code")  # the export's, the upload format's
PATCH_COLUMN = "Patch Size"  # CoralNet-Toolbox: the patch side in pixels, per point
SQUIDLE_IMAGE_COLUMN = "point.media.key"
SQUIDLE_LINEAGE_COLUMNS = ("label.translated.lineage_names", "label.lineage_names")


@dataclass
class Point:
    """One annotated point: its image (as the CSV names it), first CSV line, position (pixels, or
    fractions y, x; None for a whole frame), per-point patch size, labels (raw, one per row) and
    the other columns of its first row."""

    image: str
    line: int
    row: int | None = None
    column: int | None = None
    y: float | None = None
    x: float | None = None
    patch: int | None = None
    labels: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def whole_frame(self) -> bool:
        return self.row is None and self.y is None

    def sort_key(self) -> tuple:
        """Image, then whole frame first, then top to bottom, left to right."""
        if self.y is not None:
            return (self.image, 1, self.y, self.x)
        return (self.image, int(not self.whole_frame), self.row or 0, self.column or 0)

    def pixel(self, height: int, width: int) -> tuple[int, int] | None:
        """(row, column) in pixels: as given, or from fractions as floor(y * height + 0.5) (half
        up) clamped to the last pixel, likewise x; None for a whole frame."""
        if self.y is None:
            return None if self.row is None else (self.row, self.column)
        return _fraction_pixel(self.y, height), _fraction_pixel(self.x, width)


def _fraction_pixel(fraction: float, n: int) -> int:
    return min(math.floor(fraction * n + 0.5), n - 1)


def _number(cell: str, column: str, where: str) -> float:
    """A finite number from a cell, or a DataError naming the row and column."""
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {column} {cell!r} is not a number")
    return value


def _pixel_cell(cell: str, column: str, where: str) -> int:
    """A pixel coordinate: an integer, or a number rounded half up."""
    if not cell.strip():
        raise DataError(f"{where}: empty {column}")
    return math.floor(_number(cell, column, where) + 0.5)


def _patch_cell(cell: str, where: str) -> int | None:
    """A `Patch Size` cell: None when empty, else a positive whole number of pixels."""
    if not cell.strip():
        return None
    value = _number(cell, PATCH_COLUMN, where)
    if value < 1 or value != int(value):
        raise DataError(f"{where}: {PATCH_COLUMN} {cell!r} is not a positive whole number")
    return int(value)


def _require(csv_path: Path, header: list[str], columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{csv_path}: not a {what} export: no column {missing} (columns: {header})")


def _merge(points: dict[tuple, Point], key: tuple, point: Point, label: str) -> None:
    """Add a row's label to the point at `key`, creating it from this row when it is new."""
    known = points.setdefault(key, point)
    if label:
        known.labels.append(label)


def _skip_empty_image(image: str, line: int, skips: list[tuple[int, str]]) -> bool:
    if image:
        return False
    skips.append((line, "empty image cell"))
    return True


def read_coralnet(
    csv_path: Path, *, image_column: str = CORALNET_IMAGE_COLUMN, encoding: str = DEFAULT_ENCODING
) -> tuple[list[Point], list[tuple[int, str]]]:
    """(points, [(line, reason)] of rows without an image) of a CoralNet or CoralNet-Toolbox export.

    Columns `Name, Row, Column, Label` (or `Label code`), optionally `Patch Size`; the others become
    metadata. Rows sharing image, Row and Column are one point; an empty label adds none.
    """
    header, rows = read_csv(csv_path, encoding)
    label_column = next((c for c in CORALNET_LABEL_COLUMNS if c in header), None)
    _require(csv_path, header, [image_column, "Row", "Column"], "CoralNet")
    if label_column is None:
        raise DataError(f"{csv_path}: no Label or Label code column (columns: {header})")
    used = {image_column, "Row", "Column", label_column, PATCH_COLUMN}
    points: dict[tuple, Point] = {}
    skips: list[tuple[int, str]] = []
    for line, cells in rows:
        where = f"{csv_path} row {line}"
        image = cells[image_column].strip()
        if _skip_empty_image(image, line, skips):
            continue
        row = _pixel_cell(cells["Row"], "Row", where)
        column = _pixel_cell(cells["Column"], "Column", where)
        meta = {k: v for k, v in cells.items() if k not in used and k}
        patch = _patch_cell(cells.get(PATCH_COLUMN, ""), where)
        point = Point(image, line, row=row, column=column, patch=patch, meta=meta)
        _merge(points, (image, row, column), point, cells[label_column].strip())
    return sorted(points.values(), key=Point.sort_key), skips


def lineage_label(lineage: str, sep: str = SEP) -> tuple[str, str]:
    """(head, path) of a label lineage: `Biota > Sponges` -> (`biota`, `[BIOTA] > Biota > Sponges`);
    a lineage that already starts with a bracketed root keeps it (`[BIOTA] > ...` -> `biota`)."""
    parts = [p.strip() for p in lineage.split(sep) if p.strip()]
    if not parts:
        raise ValueError(f"empty label lineage {lineage!r}")
    own = bracketed_head(parts[0])
    if own is not None:
        return own, SEP.join(parts)
    head = re.sub(r"[^a-z0-9]+", "_", parts[0].lower()).strip("_") or "label"
    return head, SEP.join([f"[{parts[0].upper()}]", *parts])


def _lineage(cells: dict) -> str:
    """The translated lineage when the export has that column and the cell is filled, else the
    label's own lineage ('' when neither is)."""
    for column in SQUIDLE_LINEAGE_COLUMNS:
        if (cells.get(column) or "").strip():
            return cells[column].strip()
    return ""


def _fraction(cell: str, column: str, where: str) -> float:
    value = _number(cell, column, where)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: {column} {cell!r} is outside the image (a fraction in [0, 1])")
    return value


def read_squidle(
    csv_path: Path, *, image_column: str = SQUIDLE_IMAGE_COLUMN, encoding: str = DEFAULT_ENCODING
) -> tuple[list[Point], list[tuple[int, str]]]:
    """(points, [(line, reason)] of rows without an image) of a SQUIDLE+ `dataframe.csv` export.

    `point.x`, `point.y` are fractions of width and height (both empty: a whole-frame label); the
    label is the lineage (see `_lineage`), kept raw here. Rows sharing image and point are one point.
    """
    header, rows = read_csv(csv_path, encoding)
    _require(csv_path, header, [image_column, "point.x", "point.y"], "SQUIDLE+")
    if not any(c in header for c in SQUIDLE_LINEAGE_COLUMNS):
        raise DataError(f"{csv_path}: no label.lineage_names column (columns: {header})")
    used = {image_column, "point.x", "point.y", *SQUIDLE_LINEAGE_COLUMNS}
    points: dict[tuple, Point] = {}
    skips: list[tuple[int, str]] = []
    for line, cells in rows:
        where = f"{csv_path} row {line}"
        image = cells[image_column].strip()
        if _skip_empty_image(image, line, skips):
            continue
        xs, ys = cells["point.x"].strip(), cells["point.y"].strip()
        if bool(xs) != bool(ys):
            raise DataError(f"{where}: point.x and point.y must both be given or both be empty")
        y = _fraction(ys, "point.y", where) if ys else None
        x = _fraction(xs, "point.x", where) if xs else None
        meta = {k: v for k, v in cells.items() if k not in used and k}
        _merge(points, (image, y, x), Point(image, line, y=y, x=x, meta=meta), _lineage(cells))
    return sorted(points.values(), key=Point.sort_key), skips


def label_counts(points: list[Point]) -> Counter:
    """How many rows carry each raw label."""
    return Counter(label for p in points for label in p.labels)
