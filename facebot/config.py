"""Loading YAML configuration into the components' dataclasses, strictly.

A misspelt key is an error that names the key, the file and the keys that exist: a typo in
a robot's config must not silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from facebot.package_files import share_path

CONFIG_DIR = share_path("config")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line naming the file and the key."""


def from_dict(cls, data: Any, where: str):
    """Builds dataclass ``cls`` from a mapping, recursing into dataclass-typed fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for key, value in data.items():
        ftype = hints.get(key)
        if dataclasses.is_dataclass(ftype):
            value = from_dict(ftype, value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def section(data: dict, name: str, cls, path: str | Path):
    """One top-level section of a config file as dataclass ``cls``."""
    return from_dict(cls, data.get(name), f"{Path(path).name}:{name}")
