"""SIGTERM outside a training loop: raised as `Terminated` in the main thread, so a command stops
the way Ctrl-C stops it (context managers unwind, finished work is kept) with status 143, instead
of being killed unseen; inside a fit `SaveOnSigterm` takes the signal over and stops at a step.

SLURM sends SIGTERM at preemption and before the time limit (`--signal=TERM@N`) to every process of
a job step, wherever the run is: building the model, caching features, scoring after training. A
run killed there by the default action leaves the batch script no word that it was interrupted,
and the job is not requeued; with `sigterm_raises` around the command, the CLI says so (exit 143
and the `$SSL_BENTHIC_INTERRUPTED` file) and the requeued job resumes from the last checkpoint.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

from ssl_benthic.core.errors import Terminated

__all__ = ["on_sigterm", "sigterm_raises"]

Handler = Callable[[int, FrameType | None], None]


@contextmanager
def on_sigterm(handler: Handler) -> Iterator[None]:
    """Within the block, SIGTERM calls `handler` (the handler from before comes back after it);
    outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def sigterm_raises() -> AbstractContextManager[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread."""
    return on_sigterm(_raise_terminated)
