"""What every point-export format shares: the point, the row rules, and the format's declaration.

A point is one place in one image with one or more labels: rows sharing the image and the position
are one point. A position is in pixels (CoralNet `Row`, `Column`; a fractional cell is rounded half
up, by `pixel_cell`, for reading and for writing back alike) or in fractions of the height and width
(SQUIDLE+ `point.y`, `point.x`), turned into pixels once the image size is known (`Point.pixel`);
a point without a position labels the whole frame. Every column a format does not consume is kept,
from the point's first row, as metadata.

A format is one module of this package with a module-level `FORMAT = PointFormat(...)`: its name
(the `--NAME` input flag of `make-shards` and `predict`, the manifest's `source.kind`), its reader,
its labeller, its flags (`InputFlag`: `reads` flags are taken by both commands, the others label
points and are `make-shards`' alone) and, where it has one, its write-back of suggestions. The
registry (`ssl_benthic.data.points`) finds them; nothing else names a format.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_benthic.core.catami import SEP
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import DEFAULT_ENCODING

__all__ = [
    "ENCODING",
    "HEAD",
    "IMAGE_COLUMN",
    "LABEL_MAP",
    "PATH_SEP",
    "InputFlag",
    "Labels",
    "Point",
    "PointFormat",
    "label_counts",
    "merge_row",
    "number_cell",
    "patch_cell",
    "pixel_cell",
    "require_columns",
    "skip_empty_image",
    "split_path",
]

PATCH_COLUMN = "Patch Size"  # CoralNet-Toolbox: the patch side in pixels, per point
Labeler = Callable[["Point"], dict]


@dataclass(frozen=True)
class InputFlag:
    """A command-line flag of a point format: `--NAME` (aliases after it), stored as `dest`; None
    when not given (the format applies its default). `reads`: used to read the points (both
    commands); else used to label them (`make-shards` only)."""

    names: tuple[str, ...]
    dest: str
    help: str
    reads: bool = False


IMAGE_COLUMN = InputFlag(("--image-column",), "image_column", "the column naming the image", True)
ENCODING = InputFlag(
    ("--encoding",), "encoding", "text encoding of the CSV (e.g. latin-1, cp1252)", True
)
LABEL_MAP = InputFlag(
    ("--label-map",),
    "label_map",
    "CSV code,path[,head] mapping label codes to label paths and heads",
)
PATH_SEP = InputFlag(
    ("--path-sep", "--lineage-sep"),
    "path_sep",
    "separator of the levels of a label path (label map paths, SQUIDLE+ lineages; default ' > ')",
)
HEAD = InputFlag(
    ("--head",),
    "head",
    "file every label under this head instead of the head its path's root names",
)


@dataclass(frozen=True)
class Labels:
    """How one export's points are labelled: {head: [paths]} of a point, and what the manifest's
    `source` records about it."""

    labeler: Labeler
    source: dict


@dataclass(frozen=True)
class PointFormat:
    """A point-export format. `read(csv, options)` -> (points, [(line, reason)] of rows left out);
    `labels(points, csv, options)` -> Labels, refusing bad labels before anything is read;
    `write_back(source, out, suggestions, failures, options, **extra)` rewrites the export with
    suggestions (None: the format has none). `options` holds every flag of `flags` by dest."""

    name: str
    title: str
    help: str
    image_column: str
    flags: tuple[InputFlag, ...]
    read: Callable[[Path, dict], tuple[list[Point], list[tuple[int, str]]]]
    labels: Callable[[list[Point], Path, dict], Labels]
    write_back: Callable[..., None] | None = None

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """This format's flags from `given` (a dict of dest -> value, None when not given), the
        image column and encoding filled in with their defaults."""
        out = {flag.dest: given.get(flag.dest) for flag in self.flags}
        out["image_column"] = out.get("image_column") or self.image_column
        out["encoding"] = out.get("encoding") or DEFAULT_ENCODING
        return out


def split_path(text: str, sep: str | None, where: str) -> list[str]:
    """The levels of a label path split by `sep` (None: ' > '), each stripped. Refused, naming
    `where`: an empty level (a doubled or trailing separator) and a level holding the separator's
    mark (`>` of ' > ') or starting with a bracketed root it does not end with
    (`[SUBSTRATE]>Sand`): the path uses another separator."""
    sep, text = sep or SEP, text.strip()
    levels = [level.strip() for level in text.split(sep)]
    mark = sep.strip() or sep
    for level in levels:
        if not level or text.startswith(mark) or text.endswith(mark):
            raise DataError(
                f"{where}: label path {text!r} has an empty level (a doubled or trailing {sep!r})"
            )
        glued = (mark and mark in level) or re.match(r"\[[^\]]+\]\S", level)
        if glued:
            raise DataError(
                f"{where}: label path {text!r} is not written with the separator {sep!r} "
                f"(level {level!r}); pass --path-sep with the separator it uses"
            )
    return levels


@dataclass
class Point:
    """One annotated point: its image (as the CSV names it), first CSV line, position (pixels, or
    fractions y, x; None for a whole frame), per-point patch size, labels (raw, one per row, with
    the line of each in `label_lines`) and the other columns of its first row."""

    image: str
    line: int
    row: int | None = None
    column: int | None = None
    y: float | None = None
    x: float | None = None
    patch: int | None = None
    labels: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    label_lines: list[int] = field(default_factory=list)

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


def number_cell(cell: str, column: str, where: str) -> float:
    """A finite number from a cell, or a DataError naming the row and column."""
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {column} {cell!r} is not a number")
    return value


def pixel_cell(cell: str, column: str, where: str) -> int:
    """A pixel coordinate: an integer, or a number rounded half up."""
    if not cell.strip():
        raise DataError(f"{where}: empty {column}")
    return math.floor(number_cell(cell, column, where) + 0.5)


def patch_cell(cell: str, where: str) -> int | None:
    """A `Patch Size` cell: None when empty, else a positive whole number of pixels."""
    if not cell.strip():
        return None
    value = number_cell(cell, PATCH_COLUMN, where)
    if value < 1 or value != int(value):
        raise DataError(f"{where}: {PATCH_COLUMN} {cell!r} is not a positive whole number")
    return int(value)


def require_columns(csv_path: Path, header: list[str], columns: list[str], what: str) -> None:
    """Refuse a CSV without `columns`, naming the missing ones and those it has."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{csv_path}: not a {what} export: no column {missing} (columns: {header})")


def merge_row(points: dict[tuple, Point], key: tuple, point: Point, label: str) -> None:
    """Add a row's label (and line) to the point at `key`, creating it from this row when new."""
    known = points.setdefault(key, point)
    if label:
        known.labels.append(label)
        known.label_lines.append(point.line)


def skip_empty_image(image: str, line: int, skips: list[tuple[int, str]]) -> bool:
    """True (and the row noted in `skips`) when a row names no image."""
    if image:
        return False
    skips.append((line, "empty image cell"))
    return True


def label_counts(points: list[Point]) -> Counter:
    """How many rows carry each raw label."""
    return Counter(label for p in points for label in p.labels)
