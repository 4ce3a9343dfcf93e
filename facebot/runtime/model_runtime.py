"""Choosing the runtime of the model's step: torch, onnxruntime or TensorRT.

``torch`` runs the model's own step (:class:`LMStep` / :class:`FaceLMStep` + the codec; eager
or ``torch.compile``). ``onnxruntime`` and ``tensorrt`` run the exported graphs
of an export folder through :class:`GraphDuplexStep` (the export step,
:mod:`facebot.export.prepare`, makes or finds the folder first); TensorRT engines are built from
those graphs and kept in an engine cache (:mod:`facebot.runtime.engine_cache`) beside them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from .graph_runner import GraphRunner, GraphSpec, OrtGraphRunner

__all__ = ["load_ort_runners", "ort_providers"]


def ort_providers(device: str = "cpu") -> List[str]:
    """onnxruntime providers for a device name: 'cpu' or 'cuda' (CUDA first, CPU fallback)."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"onnxruntime device must be cpu or cuda, got {device!r}")


def load_ort_runners(folder: Path, manifest: dict, device: str = "cpu",
                     threads: Optional[int] = None) -> Dict[str, GraphRunner]:
    """One onnxruntime runner per graph of an export folder (buffers on ``device``)."""
    folder = Path(folder)
    providers = ort_providers(device)
    return {name: OrtGraphRunner(GraphSpec.from_folder(folder, name, entry), folder / entry["file"],
                                 providers=providers, threads=threads,
                                 device="cuda" if device == "cuda" else "cpu")
            for name, entry in manifest["graphs"].items()}
