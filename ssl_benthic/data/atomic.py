"""Writing an output folder all at once: build beside it, move into place only when complete.

A writer that fails or is interrupted half-way then leaves the earlier folder (shards and manifest)
exactly as it was, so no reader ever sees old and new samples mixed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_benthic.errors import DataError


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DataError(
            f"{out}: folder is not empty; pass --overwrite (overwrite=True) to replace its "
            "contents once the new set is complete, or choose another --out"
        )


def _warn_leftovers(out: Path, mine: Path) -> None:
    """Warn about partial folders of earlier runs that were killed before they could clean up."""
    for path in sorted(out.parent.glob(f".{out.name}.partial-*")):
        if path != mine:
            warnings.warn(f"{path}: left by an interrupted run; delete it", stacklevel=4)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and deleted after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder `.NAME.partial-PID` beside `out` to build in; when the block ends
    without error it becomes `out` (replacing what was there), on any error it is deleted.

    A non-empty `out` is refused unless `overwrite`. A symlinked `out` is replaced at its target.
    """
    out = Path(out)
    check_out(out, overwrite)
    real = out.resolve()
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = real.parent / f".{real.name}.partial-{os.getpid()}"
    _warn_leftovers(real, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _move_into_place(tmp, real)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
