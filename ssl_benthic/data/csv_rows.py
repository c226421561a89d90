"""Reading a CSV of images row by row, with the line number each row starts on, so every error
and skipped row can name it as the file shows it; a wrong encoding names the line and byte."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable
from pathlib import Path

from ssl_benthic.core.errors import DataError, UserError

DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark spreadsheets write


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """The error for a CSV that is not in `encoding`: file, line, byte, and the flag to pass."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
        pos = exc.start
    except UnicodeDecodeError as whole:
        pos = whole.start
    line = data.count(b"\n", 0, pos) + 1
    column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return DataError(
        f"{path}: line {line}, byte {column} (0x{data[pos]:02x}) is not valid {encoding} "
        f"({exc.reason}); pass --encoding latin-1 (or the file's encoding, e.g. cp1252)"
    )


def _csv_rows(lines: Iterable[str], where: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line number where the row starts, {column: cell})]); blank lines are skipped,
    short rows padded with empty cells; extra non-empty cells are warned about and ignored."""
    reader = csv.reader(lines)
    header = next(reader, None) or []
    rows, long_rows, end = [], [], reader.line_num
    for cells in reader:
        start, end = end + 1, reader.line_num
        if any(c.strip() for c in cells[len(header) :]):
            long_rows.append(start)
        if cells:
            cells = (cells + [""] * len(header))[: len(header)]
            rows.append((start, dict(zip(header, cells, strict=True))))
    if long_rows:
        warnings.warn(
            f"{where}: {len(long_rows)} rows have more cells than the header (first: row "
            f"{long_rows[0]}); the extra cells are ignored",
            stacklevel=3,
        )
    return header, rows


def read_csv(
    path: Path, encoding: str = DEFAULT_ENCODING
) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, rows with their 1-based line numbers) of a CSV; a decoding error names the line."""
    try:
        with open(path, newline="", encoding=encoding) as f:
            return _csv_rows(f, path)
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from exc
    except LookupError as exc:
        raise UserError(f"--encoding {encoding!r}: {exc}") from exc
