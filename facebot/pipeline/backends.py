"""Choosing a speech backend by name: one place for the CLI, `facebot bag` and the ROS node."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facebot.pipeline.backend import SpeechBackend
from facebot.pipeline.scripted import ScriptedBackend
from facebot.config.scripted import ScriptedConfig

BACKENDS = ("scripted", "model")


@dataclass
class BackendOptions:
    """Everything a backend may need; each backend reads its own part."""

    name: str = "scripted"
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig)
    # Backend-specific settings passed through untouched (the ROS node fills weights_path,
    # engine_path, model_config, temperature, top_k); a backend reads the keys it knows.
    extras: dict[str, Any] = field(default_factory=dict)


def model_options(extras: dict[str, Any]):
    """The model backend's options from pass-through settings (CLI flags or node parameters)."""
    from facebot.config.model import ModelOptions

    keys = {"model_config": "config", "weights_path": "weights", "mimi_weights": "mimi_weights",
            "tokenizer": "tokenizer", "temperature": "temperature", "top_k": "top_k",
            "greedy": "greedy", "weights_mode": "weights_mode", "threads": "threads", "compile": "compile",
            "face_weights": "face_weights", "runtime": "runtime", "engine_path": "export_dir",
            "precision": "precision", "device": "device", "force_engine_update": "force_engine_update",
            "verify_weights": "verify_weights"}
    kwargs = {dst: extras[src] for src, dst in keys.items() if extras.get(src) not in (None, "")}
    return ModelOptions(**kwargs)


def make_backend(options: BackendOptions) -> SpeechBackend:
    """Builds (and loads) the named backend; ``ValueError`` for an unknown name."""
    if options.name == "scripted":
        return ScriptedBackend(options.scripted)
    if options.name == "model":
        from facebot.export.prepare import prepare_export
        from facebot.pipeline.model_backend import ModelBackend

        return ModelBackend(prepare_export(model_options(options.extras)))
    raise ValueError(f"unknown backend {options.name!r} (known: {', '.join(BACKENDS)})")
