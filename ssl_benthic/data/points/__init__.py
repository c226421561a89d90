"""Point-annotation exports (CoralNet, SQUIDLE+, MERMAID): one module per format behind this
registry, the patch rule shared with predict (`patches`), and label maps (`label_map`).

A format is any module of this package with a module-level `FORMAT` (`base.PointFormat`); adding
one is adding its file. Both commands build their point-input flags from here: `add_input_flags`
gives each format its `--NAME` source flag, and `add_format_flags` the union of the formats' own
flags, each once, so `make-shards` and `predict` take the same flags for the same formats.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from functools import lru_cache
from typing import Any

from ssl_benthic.core.errors import UserError
from ssl_benthic.data.points.base import InputFlag, PointFormat

__all__ = [
    "add_format_flags",
    "add_input_flags",
    "chosen_format",
    "format_flags",
    "point_format",
    "point_formats",
    "refuse_unused_flags",
]


# the package's shared parts, not formats: never imported to build a parser (`--help` stays fast)
SHARED_PARTS = frozenset({"base", "label_map", "patches"})


@lru_cache(maxsize=1)
def point_formats() -> dict[str, PointFormat]:
    """{name: format} of every module of this package that declares a `FORMAT`, by name."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in SHARED_PARTS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        fmt = getattr(module, "FORMAT", None)
        if isinstance(fmt, PointFormat):
            found[fmt.name] = fmt
    return found


def point_format(name: str) -> PointFormat:
    """The format called `name`, or a UserError listing the registered ones."""
    formats = point_formats()
    if name not in formats:
        raise UserError(f"point format {name!r} is not one of {sorted(formats)}")
    return formats[name]


def format_flags(reads_only: bool = False) -> dict[str, InputFlag]:
    """{dest: flag} of every format's flags (only those that read points with `reads_only`)."""
    out: dict[str, InputFlag] = {}
    for fmt in point_formats().values():
        for flag in fmt.flags:
            if flag.reads or not reads_only:
                out.setdefault(flag.dest, flag)
    return out


def add_input_flags(group: argparse._ActionsContainer) -> None:
    """One `--NAME CSV` source flag per format (in a mutually exclusive group of sources)."""
    for fmt in point_formats().values():
        group.add_argument(f"--{fmt.name}", metavar="CSV", help=fmt.help)


def _users(flag: InputFlag, also: dict[str, str]) -> str:
    """'--coralnet: Name; --squidle: point.media.key' for the image column, else the formats
    that take the flag, then `also` (what other sources of the command do with it)."""
    takers = [f for f in point_formats().values() if flag in f.flags]
    if flag.dest == "image_column":
        uses = [f"--{f.name}: {f.image_column}" for f in takers]
    else:
        uses = [f"--{f.name}" for f in takers]
    if flag.dest in also:
        uses.append(also[flag.dest])
    return "; ".join(uses)


def add_format_flags(
    parser: argparse.ArgumentParser, *, reads_only: bool = False, also: dict[str, str] | None = None
) -> None:
    """Every format's flags, each once, default None; `also` adds to a flag's help what the
    command's other sources do with it."""
    also = also or {}
    for flag in format_flags(reads_only).values():
        parser.add_argument(
            *flag.names, dest=flag.dest, default=None, help=f"{flag.help} ({_users(flag, also)})"
        )


def chosen_format(args: argparse.Namespace) -> PointFormat | None:
    """The format whose `--NAME` the command line gave, None when it names none."""
    for name, fmt in point_formats().items():
        if getattr(args, name, None) is not None:
            return fmt
    return None


def refuse_unused_flags(
    args: argparse.Namespace,
    fmt: PointFormat | None,
    used: frozenset[str] = frozenset(),
    source: str = "",
) -> None:
    """Refuse a format flag that the chosen input does not use (`--head` with `--coralnet`):
    given, it would be ignored silently. Without a format: `source` (`--csv`) takes `used`."""
    taken = {f.dest for f in fmt.flags} if fmt is not None else set(used)
    source = f"--{fmt.name}" if fmt is not None else source
    for dest, flag in format_flags().items():
        value: Any = getattr(args, dest, None)
        if value is not None and dest not in taken:
            takers = [f"--{f.name}" for f in point_formats().values() if flag in f.flags]
            raise UserError(
                f"{flag.names[0]} is not used by {source} (it is for {', '.join(takers)}); drop it"
            )
