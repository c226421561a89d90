"""Typed YAML configs: one YAML file per recipe, loaded into dataclasses, with `key.sub=value` overrides.

Every error names the offending key and the file it came from, and for a near-miss the key that was meant,
before any work starts. YAML is read with `yaml.safe_load` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ssl_benthic.core.errors import ConfigError
from ssl_benthic.core.files import write_atomic

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "from_dict", "to_dict", "save_config", "apply_overrides"]


def _near_miss(key: str, choices: Sequence[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp` and convert it (lists to tuples, dicts to dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            hint = _near_miss(str(value), [str(a) for a in get_args(tp)])
            raise ConfigError(f"{source}: '{key}' = {value!r} must be one of {choices}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: '{key}' must have {len(args)} items, got {value!r}")
            return tuple(
                _convert(v, a, f"{key}[{i}]", source)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        args = get_args(tp) or (str, Any)
        return {str(k): _convert(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{source}: '{key}' must be a {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys, wrong types and missing values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}'{_near_miss(str(key), list(fields), prefix)}"
            )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{prefix}{name}'")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return obj


def to_dict(cfg: Any) -> Any:
    """A plain, YAML-safe nested dict of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _field_type(cls: Any, dotted: str, source: str) -> Any:
    """The annotation at a dotted path inside dataclass `cls` (for parsing override values)."""
    tp: Any = cls
    walked = []
    for part in dotted.split("."):
        walked.append(part)
        if dataclasses.is_dataclass(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:
                raise ConfigError(
                    f"{source}: unknown key '{'.'.join(walked)}'"
                    f"{_near_miss(part, names, '.'.join(walked[:-1]) + '.' if walked[:-1] else '')}"
                )
            tp = get_type_hints(tp)[part]
            args = [a for a in get_args(tp) if a is not type(None)]
            if get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
                tp = args[0]
        elif get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1] if get_args(tp) else Any
        else:
            raise ConfigError(f"{source}: '{'.'.join(walked[:-1])}' has no sub-keys")
    return tp


def _parse_value(raw: str, where: str) -> Any:
    """An override's value parsed as YAML ('' is None); a syntax error names the override."""
    try:
        return yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{where}: the value is not valid YAML ({problem})") from None


def apply_overrides(
    cls: type, data: dict[str, Any], overrides: Sequence[str], source: str = "override"
) -> dict[str, Any]:
    """Apply `key.sub=value` strings to a raw config dict; values are parsed as YAML unless a string is wanted."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override '{item}' is not of the form key.sub=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        tp = _field_type(cls, dotted, f"{source} '{item}'")
        value = raw if tp is str else _parse_value(raw, f"{source} '{item}'")
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: Path) -> Any:
    """`yaml.safe_load` of a file; a syntax error names the file, line and column."""
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}: {where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Load YAML file `path` into dataclass `cls`, after applying `key.sub=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty; a recipe needs at least its keys")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    data = apply_overrides(cls, data, overrides, source=f"{path}: override")
    return from_dict(cls, data, source=str(path))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (the file that reproduces a run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def dataclass_keys(cls: type) -> list[str]:
    """All dotted keys of a config dataclass (for docs and error hints)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += [f"{f.name}.{k}" for k in dataclass_keys(tp)]
        else:
            keys.append(f.name)
    return keys
