"""The toolkit's error classes: bad input from the user, as opposed to a bug.

The command lines print a `UserError` (or an `OSError` such as a missing file) as one line naming the
file, row, key or sample, and exit with status 2; a traceback only with `--debug` (or
`SSL_BENTHIC_DEBUG=1`). Raise the most specific class, with a message that says what to change.
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "BackboneError",
    "DataError",
    "LabelError",
    "Interrupted",
    "Terminated",
    "EXIT_INTERRUPTED",
]

EXIT_INTERRUPTED = (
    143  # 128 + SIGTERM: what a shell reports for a terminated job; SLURM requeues on it
)


class UserError(ValueError):
    """Bad input: a config, a data file, a label or a weights file is wrong; the message says where."""


class ConfigError(UserError):
    """A config file or override is wrong: the message names the key and the source."""


class DataError(UserError):
    """Shards, images or an annotation file are missing or malformed: the message names the file
    (and the row or sample)."""


class LabelError(DataError):
    """A label is not in its scheme, or a split lacks the labels a run needs: names the sample."""


class BackboneError(UserError):
    """A backbone name, weights source or weights file is wrong; the message names it."""


class Interrupted(Exception):
    """A run stopped on SIGTERM after saving a resumable checkpoint; the message says how to resume."""


class Terminated(KeyboardInterrupt):
    """SIGTERM asked a command with no checkpoint of its own (make-shards) to stop: raised by its
    signal handler and unwound like Ctrl-C, so finished work is kept; `kept` says what was kept."""

    kept: str = ""
