"""One comparison grid spread over many processes (a SLURM job array): `--cells I/N` runs the I-th of
N shares of the cells, a lock per cell keeps two processes off one cell, and a lock around the work
every process would otherwise repeat (the sample, an export, the report).

Locks are POSIX record locks (`fcntl.lockf`) on files in the run folders: the system drops them when
their process ends, however it ends, so a preempted task never leaves a stale lock behind; they hold
across the nodes of a cluster on file systems with POSIX locking (NFS with lockd, Lustre, GPFS).
"""

from __future__ import annotations

import argparse
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

__all__ = ["parse_share", "select_cells", "cell_lock", "cell_running", "file_lock", "LOCK"]

T = TypeVar("T")
LOCK = "cell.lock"


def parse_share(text: str) -> tuple[int, int]:
    """`I/N` (1 <= I <= N) as (I, N); `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` in an array
    numbered from 1. An argparse type: a wrong value is a usage error naming it."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 2/8, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be between 1 and N")
    return i, n


def select_cells(cells: Sequence[T], share: tuple[int, int] | None) -> list[T]:
    """The I-th of N shares of `cells` (every N-th from the I-th: the shares of 1..N partition the
    grid, and neighbouring cells, often the same start, spread over the tasks); all when None."""
    if share is None:
        return list(cells)
    i, n = share
    return list(cells[i - 1 :: n])


def _lock(handle: IO[str], wait: bool) -> bool:
    """Lock `handle`'s file; False when not waiting and another process holds it."""
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held elsewhere
        return False
    return True


@contextmanager
def cell_lock(run_dir: str | Path) -> Iterator[bool]:
    """Try to take the cell's lock without waiting: yields True when this process holds it (and
    runs the cell), False when another process runs it now."""
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        held = _lock(handle, wait=False)
        if held:
            handle.truncate(0)
            job = os.environ.get("SLURM_JOB_ID", "-")
            handle.write(f"{os.uname().nodename} pid {os.getpid()} job {job}\n")
            handle.flush()
        yield held


def cell_running(run_dir: str | Path) -> bool:
    """True while another process holds the cell's lock (call it only for cells this process
    does not hold: a POSIX lock is the process's, and closing any handle on its file drops it)."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return False
    with cell_lock(run_dir) as held:
        return not held


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created when missing), waiting for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        _lock(handle, wait=True)
        yield
