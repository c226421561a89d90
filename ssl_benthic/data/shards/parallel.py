"""Encoding images in worker processes, in input order, with bounded memory (`make-shards --workers`).

`ordered_map(fn, items, workers)` yields `fn(item)` for every item in the order of `items`, exactly
as `map` would, whatever the number of workers: the shard writer stays in this process and sees the
same results in the same order, so the shards are byte-identical to a one-worker run. Items are
sent in chunks, and at most `workers * AHEAD` chunks are in flight (sent and not yet consumed), so
memory holds a bounded number of encoded images however long the input is; `items` is read lazily.
`fn` must be picklable (a module-level function, or a `functools.partial` of one) and should catch
the errors of one input itself (a raised exception stops the run, as it would in one process).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TypeVar

__all__ = ["AHEAD", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")
AHEAD = 2  # chunks in flight per worker: one being encoded, one waiting


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter), read lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    """A worker's task: `fn` of every item of one chunk."""
    return [fn(item) for item in chunk]


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (the pool is terminated), and die
    quietly on SIGTERM (the default action; a forked worker would inherit the parent's
    `core.signals.sigterm_raises`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _context() -> multiprocessing.context.BaseContext:
    """`fork` where the platform has it (workers start at once, nothing is re-imported), else `spawn`."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 1, chunksize: int = 4
) -> Iterator[R]:
    """`fn(item)` for each item, in order; with `workers` > 1 computed in that many processes."""
    if workers < 1 or chunksize < 1:
        raise ValueError(f"workers and chunksize must be >= 1, got {workers} and {chunksize}")
    if workers == 1:
        yield from map(fn, items)
        return
    chunks = _chunks(items, chunksize)
    with _context().Pool(workers, initializer=_ignore_sigint) as pool:  # terminated on exit
        pending = deque(
            pool.apply_async(_run_chunk, (fn, c)) for c in islice(chunks, workers * AHEAD)
        )
        while pending:
            results = pending.popleft().get()
            for chunk in islice(chunks, 1):
                pending.append(pool.apply_async(_run_chunk, (fn, chunk)))
            yield from results
