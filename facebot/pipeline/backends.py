"""Choosing a speech backend by name: one place for the CLI, `facebot bag` and the ROS node."""
from __future__ import annotations

from dataclasses import dataclass, field

from facebot.pipeline.backend import SpeechBackend
from facebot.pipeline.scripted import ScriptedBackend, ScriptedConfig

BACKENDS = ("scripted",)


@dataclass
class BackendOptions:
    """Everything a backend may need; each backend reads its own part."""

    name: str = "scripted"
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig)


def make_backend(options: BackendOptions) -> SpeechBackend:
    """Builds (and loads) the named backend; ``ValueError`` for an unknown name."""
    if options.name == "scripted":
        return ScriptedBackend(options.scripted)
    raise ValueError(f"unknown backend {options.name!r} (known: {', '.join(BACKENDS)})")
