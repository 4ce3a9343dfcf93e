"""Builds the running pipeline from one PipelineConfig: the only place the parts are joined.

The `facebot` command (run, bag, eval, export) and the dialogue node both call this, so a
setting means the same thing everywhere and the rules between parts hold everywhere:

- the voice is held back by at least the head's lead + one face frame (``playout_floor_ms``):
  the motors are commanded ``lead_ms`` before the sound they go with, and a command aimed
  between two face frames needs the later one;
- a model that runs on exported graphs is exported first, as an explicit step, then started
  from the export folder alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facebot.config.files import CONFIG_DIR
from facebot.config.pipeline import PipelineConfig
from facebot.face.flame import FRAME_PERIOD_NS
from facebot.pipeline.backend import SpeechBackend
from facebot.pipeline.duplex import DuplexLoop

FACE_FRAME_MS = FRAME_PERIOD_NS / 1e6  # 40 ms: one 25 fps face frame
DEFAULT_HEAD = "head_reference.yaml"
DEFAULT_DISPLAY = "face_display.yaml"


def playout_floor_ms(head_lead_ms: float) -> float:
    """The least playout delay that lets a head with this lead move before the voice."""
    return float(head_lead_ms) + FACE_FRAME_MS


@dataclass
class Pipeline:
    """What a session runs: the loop, the head's driver (or None) and the face renderer (or None)."""

    config: PipelineConfig
    loop: DuplexLoop
    head: object | None  # facebot.pipeline.head.HeadDriver
    renderer: Callable | None


def build_backend(config: PipelineConfig) -> SpeechBackend:
    """The speech backend the config names, loaded (weights, graphs)."""
    if config.backend == "scripted":
        from facebot.pipeline.scripted import ScriptedBackend

        return ScriptedBackend(config.scripted)
    from facebot.export.prepare import prepare_export
    from facebot.pipeline.model_backend import ModelBackend

    # a graph runtime: exported first (unless the folder holds the export), then started from it
    return ModelBackend(prepare_export(config.model))


def build_head(config: PipelineConfig):
    """The head's actuator driver from ``head_config`` (None when it is "none")."""
    if not config.has_head:
        return None
    from facebot.pipeline.head import HeadDriver
    from facebot.robot.actuators import HeadController, load_head_config

    path = Path(config.head_config) if config.head_config else CONFIG_DIR / DEFAULT_HEAD
    return HeadDriver(HeadController(load_head_config(path)))


def build_renderer(config: PipelineConfig) -> Callable:
    """The face display's renderer (frames for face.mp4)."""
    from facebot.robot.display import face_renderer, load_display_config

    path = Path(config.display_config) if config.display_config else CONFIG_DIR / DEFAULT_DISPLAY
    return face_renderer(load_display_config(path)).render


def with_head_lead(config: PipelineConfig, head_lead_ms: float | None) -> PipelineConfig:
    """``config`` whose playout delay is at least the head's floor (unchanged without a head)."""
    if head_lead_ms is None:
        return config
    floor = playout_floor_ms(head_lead_ms)
    if config.loop.playout_delay_ms >= floor:
        return config
    return dataclasses.replace(config, loop=dataclasses.replace(config.loop, playout_delay_ms=floor))


def build_loop(config: PipelineConfig, backend: SpeechBackend | None = None, perception=None) -> DuplexLoop:
    """The duplex loop around ``backend`` (built from the config when None)."""
    backend = backend if backend is not None else build_backend(config)
    return DuplexLoop(backend, config.loop, seed=config.seed, perception=perception)


def build_pipeline(config: PipelineConfig, *, video: bool = True, backend: SpeechBackend | None = None,
                   perception=None) -> Pipeline:
    """Loop, head and renderer, with the playout rule applied; ``backend`` reuses a loaded one."""
    head = build_head(config)
    config = with_head_lead(config, head.lead_ms if head is not None else None)
    renderer = build_renderer(config) if video else None
    return Pipeline(config, build_loop(config, backend, perception), head, renderer)
