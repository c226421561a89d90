"""MERMAID image-classification annotations (the open-data release's `<image_id>_annotations.csv`).

MERMAID's open data pairs each image `<image_id>.png` with a CSV of its confirmed annotations,
one row per point: `row`, `col` (pixels from the top and the left), `benthic_attribute_name`,
`growth_form_name` (may be empty), and ids (`image_id`, `point_id`, `benthic_attribute_id`, ...),
kept as metadata. Several images' rows may share one CSV under one header (the daily aggregate
written as CSV). The image is the `image_id` cell (`--image-column`), `.png` added when it has no
suffix; a CSV without that column names its image by its file name (`X_annotations.csv` ->
`X.png`). Positions follow CoralNet's rule (a fractional cell rounded half up).

A point's label code is its attribute, or `attribute / growth form` when it has one
(`--growth-form-sep` joins them); codes become label paths and heads through a label map, as
CoralNet codes do (`label_map`). MERMAID has no write-back file format here.
"""

from __future__ import annotations

from pathlib import Path

from ssl_benthic.data.csv_rows import read_csv
from ssl_benthic.data.points.base import (
    ENCODING,
    IMAGE_COLUMN,
    LABEL_MAP,
    PATH_SEP,
    InputFlag,
    Point,
    PointFormat,
    merge_row,
    pixel_cell,
    require_columns,
    skip_empty_image,
)
from ssl_benthic.data.points.label_map import map_labels

__all__ = ["FORMAT", "GROWTH_FORM_SEP", "read_mermaid"]

GROWTH_FORM_SEP = " / "
ATTRIBUTE, GROWTH_FORM = "benthic_attribute_name", "growth_form_name"
SUFFIX = "_annotations.csv"

GROWTH_FORM_FLAG = InputFlag(
    ("--growth-form-sep",),
    "growth_form_sep",
    f"what joins a benthic attribute and its growth form into one label code "
    f"(default {GROWTH_FORM_SEP!r}: 'Hard coral{GROWTH_FORM_SEP}Branching')",
)


def _image_file(cell: str) -> str:
    """The image a cell names: `abc` -> `abc.png` (MERMAID stores PNGs named by id)."""
    return cell if Path(cell).suffix else f"{cell}.png"


def _own_image(csv_path: Path) -> str:
    """The image of a per-image CSV without an image column: `X_annotations.csv` -> `X.png`."""
    name = csv_path.name
    return name[: -len(SUFFIX)] + ".png" if name.endswith(SUFFIX) else ""


def mermaid_code(cells: dict, sep: str | None) -> str:
    """`attribute`, or `attribute SEP growth form`; '' for a row without an attribute."""
    attribute, form = cells[ATTRIBUTE].strip(), (cells.get(GROWTH_FORM) or "").strip()
    if not attribute:
        return ""
    return f"{attribute}{sep or GROWTH_FORM_SEP}{form}" if form else attribute


def read_mermaid(csv_path: Path, options: dict) -> tuple[list[Point], list[tuple[int, str]]]:
    """(points, [(line, reason)] of rows without an image) of a MERMAID annotations CSV; rows
    sharing image, row and col are one point."""
    image_column = options["image_column"]
    header, rows = read_csv(csv_path, options["encoding"])
    own = "" if image_column in header else _own_image(csv_path)
    require_columns(csv_path, header, [*([] if own else [image_column]), "row", "col"], "MERMAID")
    require_columns(csv_path, header, [ATTRIBUTE], "MERMAID")
    used = {image_column, "row", "col", ATTRIBUTE, GROWTH_FORM}
    points: dict[tuple, Point] = {}
    skips: list[tuple[int, str]] = []
    for line, cells in rows:
        where = f"{csv_path} row {line}"
        image = own or cells[image_column].strip()
        if skip_empty_image(image, line, skips):
            continue
        image = _image_file(image)
        row, col = pixel_cell(cells["row"], "row", where), pixel_cell(cells["col"], "col", where)
        meta = {k: v for k, v in cells.items() if k not in used and k}
        point = Point(image, line, row=row, column=col, meta=meta)
        merge_row(
            points, (image, row, col), point, mermaid_code(cells, options.get("growth_form_sep"))
        )
    return sorted(points.values(), key=Point.sort_key), skips


FORMAT = PointFormat(
    name="mermaid",
    title="MERMAID",
    help="MERMAID annotations CSV (image_id, row, col, benthic_attribute_name, growth_form_name): "
    "one patch per point",
    image_column="image_id",
    flags=(IMAGE_COLUMN, ENCODING, LABEL_MAP, PATH_SEP, GROWTH_FORM_FLAG),
    read=read_mermaid,
    labels=map_labels,
)
