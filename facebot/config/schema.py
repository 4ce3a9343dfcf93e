"""Typed settings: each field declares its unit and range once; one validator checks them all.

A settings class is a dataclass deriving from :class:`Settings` whose fields are made with
:func:`setting`. Construction (from YAML, CLI flags or ROS parameters alike) checks every
field's type, finiteness and range and raises :class:`ConfigError` naming the key, so a bad
value is refused where it enters, not as a traceback minutes into a run.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from facebot.errors import FacebotError


class ConfigError(FacebotError, ValueError):
    """A configuration problem; ``str()`` is one line naming the file and the key."""


_RANGE_KEYS = ("ge", "gt", "le", "lt")


def setting(default: Any = dataclasses.MISSING, *, unit: str = "", doc: str = "", ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its unit and bounds (``ge``/``gt``/``le``/``lt``; per element for tuples)."""
    meta = {"unit": unit, "doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounds(cls, name: str) -> tuple[float | None, float | None]:
    """The (low, high) bounds of a field, for ROS parameter descriptors and help texts."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    low = meta.get("ge") if meta.get("ge") is not None else meta.get("gt")
    high = meta.get("le") if meta.get("le") is not None else meta.get("lt")
    return low, high


def default(cls, name: str) -> Any:
    """A field's default value."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def choices(cls, name: str) -> tuple[str, ...]:
    """The allowed values of a ``Literal``-typed field."""
    hint = typing.get_type_hints(cls)[name]
    return tuple(a for a in typing.get_args(hint) if a is not None and not isinstance(a, type))


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values"
    if hint is type(None):
        return "null"
    return {float: "a finite number", int: "an integer", bool: "true or false", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _check_range(value: float, meta: dict, key: str) -> None:
    checks = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
              "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for name in _RANGE_KEYS:
        bound = meta.get(name)
        if bound is not None and not checks[name][0](value, bound):
            unit = f" {meta['unit']}" if meta.get("unit") else ""
            raise ConfigError(f"{key} must be {checks[name][1]} {bound}{unit}, got {value!r}")


def _coerce(value: Any, hint, meta: dict, key: str) -> Any:
    """``value`` checked against the type ``hint`` (and the field's bounds), in its canonical form."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, meta, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[-1] if len(errors) == 1 else ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint) or isinstance(value, bool):
            raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], meta, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be {_describe(hint)}, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, meta, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return from_mapping(hint, value, key)
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        _check_range(value, meta, key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        _check_range(float(value), meta, key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be text, got {value!r}")
        return value
    return value  # a type the schema does not describe (programmatic objects)


class Settings:
    """Base of the settings dataclasses: validates every field on construction.

    Subclasses add cross-field rules in :meth:`check` (raising ``ConfigError``).
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], dict(f.metadata), f.name)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields; the default has none."""


def from_mapping(cls, data: Any, where: str):
    """Builds settings class ``cls`` from a mapping; errors name ``where`` and the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip(':')}: expected a mapping, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - fields)
    if unknown:
        raise ConfigError(f"{where.rstrip(':')}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(cls)}
    sep = "" if where.endswith(":") else "."
    kwargs = {}
    try:
        for key, value in data.items():
            if dataclasses.is_dataclass(hints.get(key)) and isinstance(value, dict):
                value = from_mapping(hints[key], value, f"{where}{sep}{key}")
            else:  # every dataclass is type-checked here, Settings or not
                value = _coerce(value, hints[key], meta[key], key)
            kwargs[key] = value
        return cls(**kwargs)
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith(where) else f"{where}{sep}{msg}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip(':')}: {err}") from None
