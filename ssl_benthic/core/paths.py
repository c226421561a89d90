"""Checks that a recipe's input paths exist, run before any model is built, so a typo in a path fails
in a second naming the key and the path tried, not after minutes of set-up.

Relative paths resolve against the working directory (where the command runs), as the README says.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ssl_benthic.core.errors import ConfigError

__all__ = ["not_found", "require_path", "require_weights", "sha256_file"]


def not_found(value: str) -> str:
    """'not found', and for a relative path which absolute path was tried."""
    path = Path(value)
    if path.is_absolute():
        return "not found"
    return f"not found (tried {path.resolve()}, relative to the working directory {Path.cwd()})"


def require_path(value: str, key: str, what: str = "path") -> Path:
    """`value` as a Path if it exists, else a ConfigError naming `key` and the path tried."""
    if not Path(value).exists():
        raise ConfigError(f"{key}: {what} {value!r} {not_found(value)}")
    return Path(value)


def require_weights(weights: str, weights_file: str | None) -> None:
    """`backbone.weights` (unless random / imagenet) and `backbone.weights_file` exist."""
    if weights not in ("random", "imagenet"):
        require_path(weights, "backbone.weights", "weights")
    if weights_file is not None:
        require_path(weights_file, "backbone.weights_file", "weights file")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
