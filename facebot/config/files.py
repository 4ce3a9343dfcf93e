"""Reading YAML configuration files into settings dataclasses, strictly.

A misspelt key is an error that names the key, the file and the keys that exist: a typo in
a robot's config must not silently fall back to a default. Types and ranges are checked by
:mod:`facebot.config.schema`.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from facebot.config.schema import ConfigError, from_mapping
from facebot.package_files import share_path

CONFIG_DIR = share_path("config")


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: not readable ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def section(data: dict, name: str, cls, path: str | Path):
    """One top-level section of a config file as dataclass ``cls``."""
    return from_mapping(cls, data.get(name), f"{Path(path).name}:{name}")
