"""Export a whole model (codec + LM + optional face model) and find or refresh an export.

The manifest's identity keys say what the graphs were made from: the LM config, the codec
config, the weights' hash (every parameter of codec, LM and face model), the precision and the
sampling widths (top-k values fix the noise inputs' shapes). :func:`ensure_export` re-exports
when any of them differs from the model in hand, so a folder can be reused safely across runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

from .. import __version__
from ..model.codec import MimiCodec
from ..model.face_codec import FaceCodec
from ..model.face_transformer import FaceLM
from ..model.lm import LMModel
from ..model.sampling import SamplingConfig
from .graphs import build_graphs
from .onnx_export import TWO_GB, ManifestError, export_graphs, read_manifest, weights_hash

__all__ = ["model_identity", "requested_identity", "export_model", "ensure_export", "default_export_dir"]


def model_identity(codec: MimiCodec, lm: LMModel, sampling: SamplingConfig, precision: str = "fp32",
                   face_lm: Optional[FaceLM] = None, face_codec: Optional[FaceCodec] = None,
                   face_top_k: int = 0) -> dict:
    """The manifest keys that must match for an export to be reused."""
    modules = [codec, lm] + ([face_lm, face_codec] if face_lm is not None else [])
    return {**requested_identity(lm.cfg.to_dict(), dataclasses.asdict(codec.cfg), sampling, precision,
                                 face_lm is not None, face_top_k),
            "weights_hash": weights_hash(modules)}


def requested_identity(config: dict, codec: dict, sampling: SamplingConfig, precision: str = "fp32",
                       face: bool = False, face_top_k: int = 0) -> dict:
    """The identity keys that need no weights: what a start from a folder alone compares (the
    weights themselves are traced by the manifest's weight_sources)."""
    ident = {
        "config": config,
        "codec": _jsonable(codec),
        "precision": precision,
        "sampling": {"top_k_text": int(sampling.top_k_text), "top_k": int(sampling.top_k),
                     "face_top_k": int(face_top_k) if face else None},
        "face": bool(face),
        # graphs from another facebot release may differ in layout or math: re-export on upgrade
        "exporter": f"facebot {__version__}",
    }
    return json.loads(json.dumps(ident))  # as it reads back from the manifest (lists, not tuples)


def _jsonable(x):  # dataclass fields that JSON cannot hold as they are
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def default_export_dir(identity: dict) -> Path:
    """~/.cache/facebot/graphs/<model>-<hash>-<precision> (or $FACEBOT_CACHE/graphs/...)."""
    root = Path(os.environ.get("FACEBOT_CACHE", Path.home() / ".cache" / "facebot"))
    cfg = identity["config"]
    name = f"d{cfg.get('dim')}x{cfg.get('num_layers')}-{identity['weights_hash'][:12]}-{identity['precision']}"
    return root / "graphs" / name


def export_model(out_dir: Path, codec: MimiCodec, lm: LMModel, sampling: SamplingConfig,
                 precision: str = "fp32", face_lm: Optional[FaceLM] = None,
                 face_codec: Optional[FaceCodec] = None, face_top_k: int = 0,
                 external_data_threshold: int = TWO_GB, identity: Optional[dict] = None,
                 sources: Optional[dict] = None, log=print) -> dict:
    """Export every graph of the model into ``out_dir``; returns the manifest. ``sources``
    (:func:`facebot.export.deployment.weight_sources`): where the weights came from, recorded so
    that the folder can later be started from alone."""
    identity = identity or model_identity(codec, lm, sampling, precision, face_lm, face_codec, face_top_k)
    graphs = build_graphs(codec, lm, sampling.top_k_text, sampling.top_k, face_lm, face_codec, face_top_k)
    meta = {k: v for k, v in identity.items() if k != "precision"}
    meta["sample_rate"] = codec.cfg.sample_rate
    meta["frame_size"] = codec.frame_size
    if sources is not None:
        meta["weight_sources"] = sources
    return export_graphs(graphs, out_dir, meta, precision=precision,
                         external_data_threshold=external_data_threshold, log=log)


def ensure_export(out_dir: Optional[Path], codec: MimiCodec, lm: LMModel, sampling: SamplingConfig,
                  precision: str = "fp32", face_lm: Optional[FaceLM] = None,
                  face_codec: Optional[FaceCodec] = None, face_top_k: int = 0,
                  force: bool = False, sources: Optional[dict] = None, log=print) -> tuple[Path, dict]:
    """The export folder for this model: reused when its manifest matches, else (re-)exported.
    ``sources``: where the weights came from (written into a reused manifest when it differs).
    Returns (folder, manifest)."""
    identity = model_identity(codec, lm, sampling, precision, face_lm, face_codec, face_top_k)
    folder = Path(out_dir) if out_dir else default_export_dir(identity)
    if not force:
        try:
            manifest = read_manifest(folder, expect=identity)
            if sources is not None:
                from .deployment import record_sources
                manifest = record_sources(folder, manifest, sources)
            return folder, manifest
        except ManifestError as err:
            log(f"exporting graphs to {folder} ({err})")
    else:
        log(f"exporting graphs to {folder} (forced)")
    manifest = export_model(folder, codec, lm, sampling, precision, face_lm, face_codec, face_top_k,
                            identity=identity, sources=sources, log=log)
    return folder, manifest
