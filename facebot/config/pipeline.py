"""The whole pipeline's configuration: one typed object the CLI and the dialogue node fill.

It is read from one YAML file (sections ``loop``, ``scripted``, ``model``, ``echo`` and the
top-level keys below), then command-line flags or ROS parameters are applied on top as
dotted keys (``model.temperature``), each checked by the same schema and named by where it
came from (``--temperature``, ``parameter temperature``). ``facebot.assembly`` builds the
running pipeline from it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from facebot.config.echo import EchoStageConfig
from facebot.config.files import CONFIG_DIR, load_yaml
from facebot.config.loop import LoopConfig
from facebot.config.model import ModelOptions
from facebot.config.schema import ConfigError, Settings, from_mapping, setting
from facebot.config.scripted import ScriptedConfig

BACKENDS = ("scripted", "model")
DEFAULT_FILE = "facebot.yaml"
NO_HEAD = "none"


@dataclass
class PipelineConfig(Settings):
    backend: Literal["scripted", "model"] = "scripted"
    seed: int = setting(0, ge=0, le=2**31 - 1, doc="seed of every random choice (sampling, procedural face)")
    # Actuator mapping YAML (None: the package's head_reference.yaml; "none": no head). With a
    # head the voice is held back by its lead + one face frame (facebot.assembly).
    head_config: Optional[str] = None
    display_config: Optional[str] = None  # face display YAML (None: the package's face_display.yaml)
    loop: LoopConfig = setting(default_factory=LoopConfig)
    scripted: ScriptedConfig = setting(default_factory=ScriptedConfig)
    model: ModelOptions = setting(default_factory=ModelOptions)
    echo: EchoStageConfig = setting(default_factory=EchoStageConfig)

    @property
    def has_head(self) -> bool:
        return (self.head_config or "").lower() != NO_HEAD


@dataclass(frozen=True)
class Override:
    """One value from outside the file: ``key`` is dotted (``model.top_k``); ``label`` names
    where it came from in errors (``--top-k``)."""

    key: str
    value: Any
    label: str


def load_pipeline_config(path: str | Path | None = None, overrides: Iterable[Override] = ()) -> PipelineConfig:
    """The YAML file (default: the package's facebot.yaml) with ``overrides`` applied; every
    value checked once here, an error names the file and key or the flag/parameter."""
    path = Path(path) if path else CONFIG_DIR / DEFAULT_FILE
    config = from_mapping(PipelineConfig, load_yaml(path), f"{path.name}:")
    return apply_overrides(config, overrides)


def apply_overrides(config: PipelineConfig, overrides: Iterable[Override]) -> PipelineConfig:
    """``config`` with the overrides set; those of one section are applied together, so that
    rules between fields see the final values, not an order-dependent intermediate."""
    return _apply(config, list(overrides), 0)


def _apply(obj, overrides: list[Override], depth: int):
    names = {f.name for f in dataclasses.fields(obj)}
    direct, nested = {}, {}
    for item in overrides:
        keys = item.key.split(".")
        if keys[depth] not in names:
            raise ConfigError(f"{item.label}: no setting {'.'.join(keys[:depth + 1])!r} "
                              f"(known: {', '.join(sorted(names))})")
        if len(keys) == depth + 1:
            direct[keys[depth]] = item
        else:
            nested.setdefault(keys[depth], []).append(item)
    changes = {name: _apply(getattr(obj, name), items, depth + 1) for name, items in nested.items()}
    changes.update({name: tuple(o.value) if isinstance(o.value, list) else o.value for name, o in direct.items()})
    if not changes:
        return obj
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as err:
        msg = str(err)
        culprit = next((o for name, o in direct.items() if msg.startswith(name)), None)
        labels = culprit.label if culprit else ", ".join(o.label for o in direct.values()) or type(obj).__name__
        raise ConfigError(f"{labels}: {msg}") from None


def setting_field(key: str) -> tuple[type, str]:
    """(settings class, field name) of a dotted key, for flag and parameter declarations."""
    cls: Any = PipelineConfig
    *parents, last = key.split(".")
    for name in parents:
        cls = typing.get_type_hints(cls)[name]
    if last not in {f.name for f in dataclasses.fields(cls)}:
        raise KeyError(key)
    return cls, last
