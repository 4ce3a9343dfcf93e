"""Writing an ONNX model to its graph file: the one save that the exporter, the fp16 converter
and the weight quantizer share, so a graph and its external weights file always agree."""
from __future__ import annotations

from pathlib import Path

__all__ = ["save_onnx"]


def save_onnx(model, path: Path, external: bool) -> None:
    """Write ``model`` to ``path``; ``external``: its weights go to ``<name>.data`` beside it (a
    stale data file of an earlier export is removed first either way)."""
    import onnx

    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
