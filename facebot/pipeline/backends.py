"""Choosing a speech backend by name: one place for the CLI, `facebot bag` and the ROS node."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facebot.pipeline.backend import SpeechBackend
from facebot.pipeline.scripted import ScriptedBackend, ScriptedConfig

BACKENDS = ("scripted",)


@dataclass
class BackendOptions:
    """Everything a backend may need; each backend reads its own part."""

    name: str = "scripted"
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig)
    # Backend-specific settings passed through untouched (the ROS node fills weights_path,
    # engine_path, model_config, temperature, top_k); a backend reads the keys it knows.
    extras: dict[str, Any] = field(default_factory=dict)


def make_backend(options: BackendOptions) -> SpeechBackend:
    """Builds (and loads) the named backend; ``ValueError`` for an unknown name."""
    if options.name == "scripted":
        return ScriptedBackend(options.scripted)
    raise ValueError(f"unknown backend {options.name!r} (known: {', '.join(BACKENDS)})")
