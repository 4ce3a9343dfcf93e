"""Export the step graphs to ONNX, with a manifest that says what they were made from.

Each graph of :mod:`facebot.export.graphs` goes through ``torch.onnx.export`` (the torch.export
based exporter: the state is explicit, so nothing is baked in) at a fixed batch size. The fp16
variant converts the exported fp32 graph (onnxruntime's float16 converter) with every float
input and output in fp16 too: the KV buffers are then half the bytes, which is the point on a
memory-bound device. The int8 and int4 variants (:mod:`facebot.export.quantize`) store the
matmul weights in 8 or 4 bits for onnxruntime's MatMulNBits kernels (a contrib op: onnxruntime
only).
Graphs whose weights pass ``external_data_threshold`` (2 GB by default, protobuf's limit) keep
them in a ``<graph>.onnx.data`` file beside the graph.

The manifest (``manifest.json``) records the config, the weights' hash, the opset, the
precision, and per graph its file, inputs and outputs (name, shape, dtype), state names, slot
rules and the file of its initial state; the runtimes read only the manifest, the graphs and the
initial states.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from facebot.config.model import PRECISIONS
from facebot.io.atomic import atomic_write_text
from facebot.runtime.step_graph import StepGraph
from .onnx_files import save_onnx

from facebot.errors import FacebotError

__all__ = ["MANIFEST", "OPSET", "weights_hash", "export_graph", "export_graphs", "read_manifest",
           "ManifestError", "convert_precision", "derive_export", "stored_bytes", "write_manifest"]

MANIFEST = "manifest.json"
OPSET = 18
FORMAT_VERSION = 2  # 2: unrolled depth graph, weight_sources in the manifest
TWO_GB = 2 * 1024 ** 3


class ManifestError(FacebotError):
    """A missing, unreadable or mismatched export; ``str()`` names the folder and the cause."""


def weights_hash(modules: Iterable[torch.nn.Module]) -> str:
    """blake2b over every parameter and persistent buffer (names, dtypes, shapes, bytes): the key
    that says an exported graph or engine was made from these weights."""
    h = hashlib.blake2b(digest_size=16)
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            t = t.detach()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.device.type == "meta":
                continue
            t = t.contiguous().cpu()
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _to_fp16(path: Path, external: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    # keep_io_types=False: state and activations cross the graph boundary in fp16 as well
    half = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    save_onnx(half, path, external)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress chatter and deprecation notices are not the user's business."""
    names = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_graph(graph: StepGraph, path: Path, precision: str = "fp32", opset: int = OPSET,
                 external_data_threshold: int = TWO_GB) -> dict:
    """One graph to ``path``; returns its manifest entry."""
    import onnx

    path = Path(path)
    args = graph.example_inputs()
    with torch.inference_mode():
        outs = graph(*args)
    with _quiet_exporter():
        prog = torch.onnx.export(graph, tuple(a.clone() for a in args), None, dynamo=True,
                                 input_names=graph.input_names, output_names=graph.output_names,
                                 opset_version=opset, optimize=True, verbose=False)
    # the weights the graph really holds (its initializers), not the modules it borrows from
    weight_bytes = sum(v.const_value.nbytes for v in prog.model.graph.initializers.values()
                       if v.const_value is not None)
    external = weight_bytes >= external_data_threshold
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        prog.save(str(path), external_data=True)  # weights in <name>.onnx.data
        if not data.exists():
            raise RuntimeError(f"{path}: the exporter wrote no {data.name}")
    else:
        prog.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    weights = convert_precision(path, precision, external, graph=graph.name)

    init = graph.init_state()
    state_file = path.with_suffix(".state.safetensors")
    if init:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in init.items()}, str(state_file))
    entry = _entry_dtypes(graph.describe(args, outs), precision)
    return {"file": path.name, "external_data": (path.name + ".data") if external else None,
            **entry, "init_state": state_file.name if init else None,
            "weight_bytes": int(weight_bytes), "weight_precision": weights, **stored_bytes(path),
            **{k: getattr(graph, k) for k in ("top_k",) if hasattr(graph, k)}}


def convert_precision(path: Path, precision: str, external: bool, block_size: Optional[int] = None,
                      graph: str = "") -> str:
    """Turn the fp32 graph at ``path`` (named ``graph``) into ``precision`` in place (fp32:
    nothing to do); returns the precision its weights got (Mimi's stay int8 under int4)."""
    if precision == "fp16":
        _to_fp16(path, external)
    elif precision in ("int8", "int4"):  # weight-only matmuls for onnxruntime (CPU); I/O stays fp32
        from .quantize import graph_weight_precision, quantize_weights
        weights = graph_weight_precision(precision, graph)
        quantize_weights(path, weights, block_size=block_size if weights == precision else None,
                         external=external)
        return weights
    elif precision != "fp32":
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _entry_dtypes(entry: dict, precision: str) -> dict:
    if precision == "fp16":  # the converter made every float input and output fp16
        for e in entry["inputs"] + entry["outputs"]:
            if e["dtype"] == "float32":
                e["dtype"] = "float16"
    return entry


def stored_bytes(path: Path) -> dict:
    """Bytes of the weights a graph file stores (``stored_bytes``) and of those a frame reads in
    full (``frame_bytes``: every initializer but the tables that are only gathered from, i.e.
    embeddings, of which a frame reads a few rows) -- measured from the file as exported."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    g = model.graph
    gathered, other = set(), set()
    for n in g.node:
        for i, name in enumerate(n.input):
            (gathered if n.op_type == "Gather" and i == 0 else other).add(name)
    total = frame = 0
    for t in g.initializer:
        nbytes = int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        total += nbytes
        if t.name in other or t.name not in gathered:
            frame += nbytes
    return {"stored_bytes": int(total), "frame_bytes": int(frame)}


def derive_export(src: Path, dst: Path, precision: str, block_size: Optional[int] = None) -> dict:
    """A ``precision`` export in ``dst`` made from the fp32 export in ``src`` without tracing
    again (the conversion :func:`export_graph` applies); returns the new manifest."""
    import shutil

    src, dst = Path(src), Path(dst)
    manifest = read_manifest(src)
    if manifest["precision"] != "fp32":
        raise ValueError(f"{src}: derive from an fp32 export, not {manifest['precision']}")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / MANIFEST).unlink(missing_ok=True)
    graphs = {}
    for name, e in manifest["graphs"].items():
        for f in (e["file"], e.get("external_data"), e.get("init_state")):
            if f:
                shutil.copyfile(src / f, dst / f)
        weights = convert_precision(dst / e["file"], precision, bool(e.get("external_data")), block_size, name)
        graphs[name] = {**_entry_dtypes(json.loads(json.dumps(e)), precision), "weight_precision": weights,
                        **stored_bytes(dst / e["file"])}
    out = {**manifest, "precision": precision, "graphs": graphs,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if block_size:
        out["block_size"] = int(block_size)
    write_manifest(dst, out)
    return out


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace ``folder``'s manifest whole (atomically): a reader sees the old manifest or the
    new one, never a part."""
    atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=1))


def export_graphs(graphs: Dict[str, StepGraph], out_dir: Path, meta: dict, precision: str = "fp32",
                  opset: int = OPSET, external_data_threshold: int = TWO_GB,
                  log=print) -> dict:
    """Export every graph into ``out_dir`` and write the manifest (last, so a folder with a
    manifest is a complete export). ``meta`` holds the config, weights hash and sampling."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    entries = {}
    for name, g in graphs.items():
        t0 = time.perf_counter()
        entries[name] = export_graph(g, out_dir / f"{name}.onnx", precision, opset,
                                     external_data_threshold)
        log(f"  {name}: {entries[name]['weight_bytes'] / 1e6:.1f} MB of weights, "
            f"{len(entries[name]['state'])} state tensors, {time.perf_counter() - t0:.1f} s")
    manifest = {"format": FORMAT_VERSION, "opset": opset, "precision": precision,
                "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **meta, "graphs": entries}
    write_manifest(out_dir, manifest)
    return manifest


def read_manifest(folder: Path, expect: Optional[dict] = None) -> dict:
    """The manifest of an export folder; with ``expect``, every key given must match (weights
    hash, config, precision...), else :class:`ManifestError` says which differs."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ManifestError(f"{folder}: no {MANIFEST} (not an export, or an interrupted one)") from None
    except (OSError, ValueError) as err:
        raise ManifestError(f"{folder / MANIFEST}: unreadable ({err})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ManifestError(f"{folder}: export format {manifest.get('format')} != {FORMAT_VERSION} "
                            "(made by another facebot release: re-export it)")
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise ManifestError(f"{folder}: exported for {key}={manifest.get(key)!r}, need {value!r}")
    for name, g in manifest.get("graphs", {}).items():
        if not (folder / g["file"]).is_file():
            raise ManifestError(f"{folder}: graph {name} file {g['file']} is missing")
    return manifest
