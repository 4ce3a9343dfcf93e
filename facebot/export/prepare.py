"""The export step of a start on a graph runtime (onnxruntime, TensorRT): before the model
backend loads an export folder, make sure there is one.

A folder given that holds an export is left as it is: the backend checks that it holds the
model asked for and refuses it naming what differs. Otherwise the networks are loaded (torch)
and exported into the folder given or, without one, into the user cache, where an export is
reused while weights, config, precision and sampling widths match (:func:`ensure_export`).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

from facebot.config.model import ModelOptions
from facebot.model.loading import (ModelLoadError, load_networks, model_config, model_files,
                                   sampling_config)
from facebot.runtime.face_lm_step import FaceLMStep
from facebot.runtime.lm_step import LMStep

from .deployment import recorded_sources, weight_sources
from .model_export import ensure_export
from .onnx_export import MANIFEST, ManifestError

__all__ = ["prepare_export"]


def _log(msg: str) -> None:
    print(f"facebot: {msg}", file=sys.stderr)


def prepare_export(options: ModelOptions, log: Callable[[str], None] = _log) -> ModelOptions:
    """``options`` with ``export_dir`` naming a folder that holds an export (unchanged for the
    torch runtime). ``force_engine_update`` re-exports; a model that cannot be loaded or
    exported raises :class:`ModelLoadError` naming the file or the cause."""
    if options.runtime == "torch":
        return options
    out = Path(options.export_dir) if options.export_dir else None
    if out is not None and not options.force_engine_update and (out / MANIFEST).is_file():
        return options
    cfg, files = model_config(options), model_files(options)
    sampling = sampling_config(options)
    nets = load_networks(options, cfg, files)
    if nets.face_lm is not None:  # refuse a face model that cannot stream with this LM, as the torch runtime does
        try:
            FaceLMStep(LMStep(nets.lm, sampling), nets.face_lm, nets.face_codec).init_state(1)
        except Exception as err:
            raise ModelLoadError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    try:
        sources = weight_sources(files.weights, options.init_seed, recorded_sources(out))
        folder, _ = ensure_export(out, nets.codec, nets.lm, sampling, options.precision, nets.face_lm,
                                  nets.face_codec, force=options.force_engine_update, sources=sources, log=log)
    except (ManifestError, OSError, RuntimeError, ValueError) as err:
        raise ModelLoadError(f"runtime {options.runtime}: {str(err).splitlines()[0]}") from None
    return dataclasses.replace(options, export_dir=str(folder))
