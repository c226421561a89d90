"""Registry of self-supervised methods: name -> LightningModule class.

Every module in this package (except `base`) is imported on first use; a method registers itself with
`@register_method`, so adding one is one new file here plus one config.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from ssl_benthic.pretrain.methods.base import SSLMethod

__all__ = ["METHODS", "register_method", "get_method", "method_names"]

METHODS: dict[str, type[SSLMethod]] = {}


def register_method(cls: type[SSLMethod]) -> type[SSLMethod]:
    """Class decorator: make `cls` available under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    METHODS[cls.name] = cls
    return cls


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def method_names() -> list[str]:
    _import_all()
    return sorted(METHODS)


def get_method(name: str) -> type[SSLMethod]:
    """The method class called `name`; an unknown name fails listing the known ones."""
    names = method_names()
    if name not in METHODS:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"method.name: unknown method '{name}'{hint}; known: {', '.join(names)}")
    return METHODS[name]
