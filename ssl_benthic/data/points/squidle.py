"""SQUIDLE+ `dataframe.csv` exports: points given as fractions, labels as lineages.

`point.x`, `point.y` are fractions of the width and height (both empty: a whole-frame label). The
label is the translated lineage when the export has one for the row, else the label's own lineage
(`label.translated.lineage_names`, `label.lineage_names`). A lineage `Biota > Sponges` is the path
`[BIOTA] > Biota > Sponges` of the head `biota` (its root names the head; `--head` files them all
under one). Every lineage is split by the configured separator (`--path-sep`, default ' > ') and
refused, naming its row, when it does not parse with it: an empty level (a trailing separator),
a level holding the separator's mark, a root that is no plain name (`Biota/Sponges`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ssl_benthic.core.catami import SEP, bracketed_head
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import read_csv
from ssl_benthic.data.points.base import (
    ENCODING,
    HEAD,
    IMAGE_COLUMN,
    PATH_SEP,
    Labels,
    Point,
    PointFormat,
    merge_row,
    number_cell,
    require_columns,
    skip_empty_image,
    split_path,
)

__all__ = ["FORMAT", "LINEAGE_COLUMNS", "lineage_label", "read_squidle"]

LINEAGE_COLUMNS = ("label.translated.lineage_names", "label.lineage_names")
PLAIN_ROOT = re.compile(r"[\w][\w .()&'-]*")  # a root that can name a head: no separator in it


def _lineage(cells: dict) -> str:
    """The translated lineage when the export has that column and the cell is filled, else the
    label's own lineage ('' when neither is)."""
    for column in LINEAGE_COLUMNS:
        if (cells.get(column) or "").strip():
            return cells[column].strip()
    return ""


def _fraction(cell: str, column: str, where: str) -> float:
    value = number_cell(cell, column, where)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: {column} {cell!r} is outside the image (a fraction in [0, 1])")
    return value


def read_squidle(csv_path: Path, options: dict) -> tuple[list[Point], list[tuple[int, str]]]:
    """(points, [(line, reason)] of rows without an image) of a SQUIDLE+ export; lineages kept
    raw here (`lineage_label` reads them). Rows sharing image and point are one point."""
    image_column = options["image_column"]
    header, rows = read_csv(csv_path, options["encoding"])
    require_columns(csv_path, header, [image_column, "point.x", "point.y"], "SQUIDLE+")
    if not any(c in header for c in LINEAGE_COLUMNS):
        raise DataError(f"{csv_path}: no label.lineage_names column (columns: {header})")
    used = {image_column, "point.x", "point.y", *LINEAGE_COLUMNS}
    points: dict[tuple, Point] = {}
    skips: list[tuple[int, str]] = []
    for line, cells in rows:
        where = f"{csv_path} row {line}"
        image = cells[image_column].strip()
        if skip_empty_image(image, line, skips):
            continue
        xs, ys = cells["point.x"].strip(), cells["point.y"].strip()
        if bool(xs) != bool(ys):
            raise DataError(f"{where}: point.x and point.y must both be given or both be empty")
        y = _fraction(ys, "point.y", where) if ys else None
        x = _fraction(xs, "point.x", where) if xs else None
        meta = {k: v for k, v in cells.items() if k not in used and k}
        merge_row(points, (image, y, x), Point(image, line, y=y, x=x, meta=meta), _lineage(cells))
    return sorted(points.values(), key=Point.sort_key), skips


def lineage_label(lineage: str, sep: str | None = None, where: str = "") -> tuple[str, str]:
    """(head, path) of a label lineage split by `sep` (`split_path`): `Biota > Sponges` ->
    (`biota`, `[BIOTA] > Biota > Sponges`); a bracketed root is kept (`[BIOTA] > ...` -> `biota`)."""
    where = where or "label lineage"
    parts = split_path(lineage, sep, where)
    own = bracketed_head(parts[0])
    if own is not None:
        return own, SEP.join(parts)
    if not PLAIN_ROOT.fullmatch(parts[0]):
        raise DataError(
            f"{where}: label lineage {lineage!r} starts with {parts[0]!r}, not a plain name to "
            f"head it (is the separator {sep or SEP!r}? pass --path-sep with the one it uses)"
        )
    head = re.sub(r"[^a-z0-9]+", "_", parts[0].lower()).strip("_") or "label"
    return head, SEP.join([f"[{parts[0].upper()}]", *parts])


def squidle_labels(points: list[Point], csv_path: Path, options: dict) -> Labels:
    """{head: [paths]} of each point's lineages; every lineage checked here, before any image is
    read, naming its row; `options["head"]` files them all under one head."""
    sep, head = options.get("path_sep"), options.get("head")
    found: dict[int, dict[str, list[str]]] = {}
    for point in points:
        out: dict[str, list[str]] = {}
        for lineage, line in zip(point.labels, point.label_lines, strict=True):
            own, path = lineage_label(lineage, sep, f"{csv_path} row {line}")
            if path not in out.setdefault(head or own, []):
                out[head or own].append(path)
        found[id(point)] = out
    source = {"lineage_sep": sep or SEP, "head": head}
    return Labels(lambda point: found[id(point)], source)


FORMAT = PointFormat(
    name="squidle",
    title="SQUIDLE+",
    help="SQUIDLE+ annotation export (dataframe.csv): one patch per point, whole frames as images",
    image_column="point.media.key",
    flags=(IMAGE_COLUMN, ENCODING, PATH_SEP, HEAD),
    read=read_squidle,
    labels=squidle_labels,
)
