"""Checks that a recipe's input paths exist, run before any model is built, so a typo in a path fails
in a second naming the key and the path tried, not after minutes of set-up.

Relative paths resolve against the working directory (where the command runs), as the README says.
"""

from __future__ import annotations

from pathlib import Path

from ssl_benthic.errors import ConfigError

__all__ = ["require_path", "require_shards", "require_weights"]


def _not_found(value: str) -> str:
    """'not found', and for a relative path which absolute path was tried."""
    path = Path(value)
    if path.is_absolute():
        return "not found"
    return f"not found (tried {path.resolve()}, relative to the working directory {Path.cwd()})"


def require_path(value: str, key: str, what: str = "path") -> Path:
    """`value` as a Path if it exists, else a ConfigError naming `key` and the path tried."""
    if not Path(value).exists():
        raise ConfigError(f"{key}: {what} {value!r} {_not_found(value)}")
    return Path(value)


def require_shards(value: str, key: str) -> None:
    """`value` names readable shards: a folder with a shard manifest.json, a manifest file, or a
    brace pattern / tar path whose every file exists."""
    from ssl_benthic.data.reader import shard_urls

    if "{" not in value:
        require_path(value, key, "shard folder")
    try:
        urls = shard_urls(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"{key}: shard {missing[0]!r}{more} {_not_found(missing[0])}")


def require_weights(weights: str, weights_file: str | None) -> None:
    """`backbone.weights` (unless random / imagenet) and `backbone.weights_file` exist."""
    if weights not in ("random", "imagenet"):
        require_path(weights, "backbone.weights", "weights")
    if weights_file is not None:
        require_path(weights_file, "backbone.weights_file", "weights file")
