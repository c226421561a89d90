"""The formats `hml-finetune predict` writes, one file each behind this registry.

A writer is any module here with a module-level `WRITER` (a `predict.writers.Writer` subclass with
its `name` and `help`); `--format` lists them. Adding one is adding its file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from hml_finetune.predict.writers import WriteContext, Writer
from ssl_benthic.core.errors import ConfigError

__all__ = ["open_writer", "writer_class", "writer_help", "writers"]


@lru_cache(maxsize=1)
def writers() -> dict[str, type[Writer]]:
    """{name: writer class} of every module of this package that declares a `WRITER`."""
    found: dict[str, type[Writer]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cls = getattr(module, "WRITER", None)
        if isinstance(cls, type) and issubclass(cls, Writer):
            found[cls.name] = cls
    return found


def writer_class(name: str) -> type[Writer]:
    """The writer of `--format name`, or a ConfigError listing them."""
    if name not in writers():
        raise ConfigError(f"--format {name!r} is not one of {sorted(writers())}")
    return writers()[name]


def writer_help() -> str:
    """`--format`'s help: each writer's name and what it writes."""
    return "; ".join(f"{name}: {cls.help}" for name, cls in writers().items())


def open_writer(name: str, ctx: WriteContext) -> Writer:
    """The writer of `name`, opened on `ctx.path`."""
    return writer_class(name)(ctx)
