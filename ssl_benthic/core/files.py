"""Small files written whole or not at all: to `.NAME.PID.tmp` beside the target, then renamed over
it (`os.replace` is atomic on one file system), so a run killed mid-write leaves the old file or
none, never a truncated one that a resume or `compare` would read as finished; processes writing
the same file (the tasks of an array sharing a feature cache) each use their own temporary."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary file beside it; on any error the
    temporary file is removed and `path` is as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
