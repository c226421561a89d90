"""CoralNet (and CoralNet-Toolbox) exports, both directions: points in, machine suggestions out.

Columns `Name, Row, Column, Label` (or `Label code`), optionally `Patch Size`; the others become
metadata. `Row`/`Column` are pixels; a fractional cell (CoralNet-Toolbox, hand-edited files) is
rounded half up by `place`, the one rule the reader and the write-back share, so a suggestion
lands on the row it was computed for. Labels are codes, through a label map (`label_map`).

The write-back is the export itself, every row and column kept (read with the same image column
and encoding), with `Machine suggestion 1..k`, `Machine confidence 1..k` (percent, as CoralNet
writes it), `Machine label rule` (the run's label rule) and `Machine error` (why a point got no
suggestion: its image could not be read, it lies outside it, its row names no image).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from ssl_benthic.core.errors import DataError
from ssl_benthic.data.csv_rows import read_csv
from ssl_benthic.data.points.base import (
    ENCODING,
    IMAGE_COLUMN,
    LABEL_MAP,
    PATCH_COLUMN,
    PATH_SEP,
    Point,
    PointFormat,
    merge_row,
    patch_cell,
    pixel_cell,
    require_columns,
    skip_empty_image,
)
from ssl_benthic.data.points.label_map import map_labels

__all__ = ["FORMAT", "LABEL_COLUMNS", "place", "read_coralnet", "write_suggestions"]

LABEL_COLUMNS = ("Label", "Label code")  # the export's, the upload format's
RULE_COLUMN = "Machine label rule"
ERROR_COLUMN = "Machine error"
Place = tuple[str, int, int]


def place(cells: dict, image_column: str, where: str) -> Place | None:
    """(image, row, column) of a row, pixels rounded half up; None when it names no image."""
    image = cells[image_column].strip()
    if not image:
        return None
    return (
        image,
        pixel_cell(cells["Row"], "Row", where),
        pixel_cell(cells["Column"], "Column", where),
    )


def _label_column(csv_path: Path, header: list[str], image_column: str) -> str:
    require_columns(csv_path, header, [image_column, "Row", "Column"], "CoralNet")
    column = next((c for c in LABEL_COLUMNS if c in header), None)
    if column is None:
        raise DataError(f"{csv_path}: no Label or Label code column (columns: {header})")
    return column


def read_coralnet(csv_path: Path, options: dict) -> tuple[list[Point], list[tuple[int, str]]]:
    """(points, [(line, reason)] of rows without an image) of a CoralNet or CoralNet-Toolbox
    export; rows sharing image, Row and Column are one point; an empty label adds none."""
    image_column = options["image_column"]
    header, rows = read_csv(csv_path, options["encoding"])
    label_column = _label_column(csv_path, header, image_column)
    used = {image_column, "Row", "Column", label_column, PATCH_COLUMN}
    points: dict[tuple, Point] = {}
    skips: list[tuple[int, str]] = []
    for line, cells in rows:
        where = f"{csv_path} row {line}"
        at = place(cells, image_column, where)
        if skip_empty_image(at[0] if at else "", line, skips):
            continue
        meta = {k: v for k, v in cells.items() if k not in used and k}
        patch = patch_cell(cells.get(PATCH_COLUMN, ""), where)
        point = Point(at[0], line, row=at[1], column=at[2], patch=patch, meta=meta)
        merge_row(points, at, point, cells[label_column].strip())
    return sorted(points.values(), key=Point.sort_key), skips


def _columns(header: list[str], k: int) -> list[str]:
    extra = [
        f"Machine {kind} {i}" for i in range(1, k + 1) for kind in ("suggestion", "confidence")
    ]
    extra += [RULE_COLUMN, ERROR_COLUMN]
    return [*header, *(c for c in extra if c not in header)]


def write_suggestions(
    source: Path,
    out: TextIO,
    suggestions: dict[Place, list[tuple[str, float]]],
    failures: dict[Place, str],
    options: dict,
    *,
    k: int,
    rule: str = "",
) -> None:
    """Write the export `source` to `out` with each row's suggestions (code, probability), at
    most `k`, confidence round(100 p); a failed point's reason goes into `Machine error`."""
    header, rows = read_csv(source, options["encoding"])
    writer = csv.DictWriter(out, fieldnames=_columns(header, k))
    writer.writeheader()
    for line, row in rows:
        at = place(row, options["image_column"], f"{source} row {line}")
        row[RULE_COLUMN] = rule
        row[ERROR_COLUMN] = "empty image cell" if at is None else failures.get(at, "")
        for i, (code, p) in enumerate(suggestions.get(at, [])[:k], 1):
            row[f"Machine suggestion {i}"] = code
            row[f"Machine confidence {i}"] = round(100 * p)
        writer.writerow(row)


FORMAT = PointFormat(
    name="coralnet",
    title="CoralNet",
    help="CoralNet / CoralNet-Toolbox annotation CSV (Name, Row, Column, Label): one patch per point",
    image_column="Name",
    flags=(IMAGE_COLUMN, ENCODING, LABEL_MAP, PATH_SEP),
    read=read_coralnet,
    labels=map_labels,
    write_back=write_suggestions,
)
