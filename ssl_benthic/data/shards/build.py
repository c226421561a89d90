"""Writing an output folder all at once: build beside it, move into place only when complete.

A writer that fails or is interrupted half-way then leaves the earlier folder (shards and manifest)
exactly as it was, so no reader ever sees old and new samples mixed.

Inside `resumable()` (what `make-shards` runs in) a build that fails after finishing some shards
is kept beside its output (`.OUT.partial-PID`, with the shard writer's progress file), and with
`resume=True` the next build of that output adopts the newest such folder that no running process
holds (each build holds a lock on its `.lock` file): it is moved inside the new build folder as
`.resume/`, where shard writers (`previous`) find the finished shards they may reuse. Whatever they
do not take is deleted when the build completes; progress and lock files never reach the output.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from ssl_benthic.core.errors import DataError, Terminated

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, a folder is never seen as in use
    fcntl = None

__all__ = ["LOCK", "PROGRESS", "atomic_folder", "check_out", "previous", "resumable"]

PROGRESS = ".progress.jsonl"  # a shard writer's record of its finished shards (`progress`)
LOCK = ".lock"
HOLD = ".resume"  # inside a build folder: the adopted folder of an interrupted build


@dataclass(frozen=True)
class _Build:
    """One folder being built: its output, its build folder, and the adopted earlier build."""

    out: Path
    tmp: Path
    hold: Path | None


_MODE: ContextVar[tuple[bool, bool]] = ContextVar("atomic_mode", default=(False, False))
_STACK: ContextVar[tuple[_Build, ...]] = ContextVar("atomic_stack", default=())


@contextmanager
def resumable(resume: bool = False) -> Iterator[None]:
    """Within: failed builds keep their finished shards; with `resume`, builds adopt them."""
    token = _MODE.set((True, resume))
    try:
        yield
    finally:
        _MODE.reset(token)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DataError(
            f"{out}: folder is not empty; pass --overwrite (overwrite=True) to replace its "
            "contents once the new set is complete, or choose another --out"
        )


def _partials(out: Path) -> list[Path]:
    """The build folders `.NAME.partial-*` beside `out`."""
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def _warn_leftovers(out: Path, mine: Path) -> None:
    """Warn about partial folders of earlier runs that were killed before they could clean up."""
    for path in _partials(out):
        if path != mine:
            n = finished_shards(path)
            what = f"holds {n} finished shards that --resume reuses, or delete it" if n else ""
            warnings.warn(
                f"{path}: left by an interrupted run; {what or 'delete it'}", stacklevel=5
            )


def finished_shards(folder: Path) -> int:
    """How many finished shards the progress files under `folder` record (0 for none)."""
    total = 0
    for path in folder.rglob(PROGRESS):
        with suppress(OSError), open(path, "rb") as f:
            total += max(0, sum(1 for _ in f) - 1)  # the first line holds the settings
    return total


def _lock(folder: Path) -> int | None:
    """Hold an exclusive lock on `folder/.lock` (a file descriptor), or None if another holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the lock


def _progress_time(folder: Path) -> float:
    """When the newest progress file under `folder` was written (orders adoptable folders)."""
    return max((p.stat().st_mtime for p in folder.rglob(PROGRESS)), default=-1.0)


def _adoptable(out: Path) -> Path | None:
    """The newest partial folder of `out` with finished shards that no running build holds."""
    found = [p for p in _partials(out) if p.is_dir() and finished_shards(p)]
    for path in sorted(found, key=_progress_time, reverse=True):
        if (path / LOCK).is_file() and (fd := _lock(path)) is not None:
            _unlock(fd)
            return path
    return None


def _build_path(out: Path) -> Path:
    """`.NAME.partial-PID` beside `out`; `-PID.2`, ... when this process kept a failed one there."""
    tmp, n = out.parent / f".{out.name}.partial-{os.getpid()}", 1
    while tmp.is_dir() and finished_shards(tmp):
        n += 1
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}.{n}"
    return tmp


def _new_build(out: Path, tmp: Path, adopt: bool) -> Path | None:
    """Create the empty build folder `tmp` and, with `adopt`, move the folder to adopt into it as
    `.resume` (never `tmp` itself: `_build_path` passes over folders with finished shards)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old = _adoptable(out) if adopt else None
    if old is None:
        return None
    os.replace(old, tmp / HOLD)
    return tmp / HOLD


def previous(tmp: Path) -> Path | None:
    """The adopted earlier build of the folder being built in `tmp` (its finished shards and
    progress file), or None. A nested build (e.g. a split's `tmp/train`) finds its earlier
    counterpart inside the outermost adopted folder: finished (`train/`) or partial (`.train.partial-*`)."""
    stack = _STACK.get()
    if not stack or stack[0].hold is None:
        return None
    build = next((b for b in stack if b.tmp == tmp), None)
    if build is None:
        return None
    if build is stack[0]:
        return build.hold if (build.hold / PROGRESS).is_file() else None
    base = stack[0].hold / build.out.relative_to(stack[0].tmp)
    if (base / PROGRESS).is_file():
        return base
    found = [p for p in _partials(base) if (p / PROGRESS).is_file()]
    return max(found, key=_progress_time) if found else None


def _out_name(entry: Path) -> str:
    """The output a build-folder entry stands for: `.train.partial-12` and `train` are `train`."""
    name = entry.name
    if name.startswith(".") and ".partial-" in name:
        return name[1:].rsplit(".partial-", 1)[0]
    return name


def _keep_unclaimed(hold: Path, tmp: Path) -> None:
    """After a failed build: keep what the adopted folder still holds for outputs this build did
    not reach (e.g. a later split), so the next --resume finds it; delete the rest."""
    if not hold.is_dir():
        return
    reached = {_out_name(p) for p in tmp.iterdir() if p != hold}
    for entry in hold.iterdir():
        if entry.is_dir() and _out_name(entry) not in reached and finished_shards(entry):
            os.replace(entry, tmp / entry.name)
    shutil.rmtree(hold, ignore_errors=True)


def _strip(tmp: Path) -> None:
    """Remove the adopted folder, progress and lock files: the output holds only shards and manifests."""
    shutil.rmtree(tmp / HOLD, ignore_errors=True)
    for name in (PROGRESS, LOCK):
        for path in tmp.rglob(name):
            path.unlink()


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


def _failed(tmp: Path, build: _Build, keep: bool, outermost: bool) -> None:
    """Delete a failed build, or (inside `resumable`) keep it when it holds finished shards."""
    if build.hold is not None:
        _keep_unclaimed(build.hold, tmp)
    if not (keep and finished_shards(tmp)):
        shutil.rmtree(tmp, ignore_errors=True)
    elif outermost:
        note = (
            f"{tmp}: kept the {finished_shards(tmp)} finished shards of this interrupted run; "
            "the same command with --resume reuses them (or delete the folder)"
        )
        exc = sys.exc_info()[1]
        if isinstance(exc, Terminated):  # said in the one line the command prints for it
            exc.kept = note
        else:
            warnings.warn(note, stacklevel=4)


@contextmanager
def atomic_folder(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder `.NAME.partial-PID` beside `out` to build in; when the block ends
    without error it becomes `out` (replacing what was there), on any error it is deleted
    (inside `resumable()`, kept when it holds finished shards).

    A non-empty `out` is refused unless `overwrite`. A symlinked `out` is replaced at its target.
    """
    out = Path(out)
    keep, resume = _MODE.get()
    stack = _STACK.get()
    outermost = not stack
    check_out(out, overwrite)
    real = out.resolve()
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = _build_path(real)
    hold = _new_build(real, tmp, resume and outermost)
    fd = _lock(tmp) if keep and outermost else None
    if outermost:
        _warn_leftovers(real, tmp)
    build = _Build(real, tmp, hold)
    token = _STACK.set((*stack, build))
    try:
        yield tmp
        if outermost:
            _strip(tmp)
        _move_into_place(tmp, real)
    except BaseException:
        _failed(tmp, build, keep, outermost)
        raise
    finally:
        _STACK.reset(token)
        _unlock(fd)
