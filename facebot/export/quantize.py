"""Weight-only int8 / int4 for exported graphs on onnxruntime (CPU): onnxruntime's own
MatMulNBits quantizer (blockwise symmetric, activations stay float).

Batch-1 decoding reads every weight once per frame, so on a memory-bound CPU the step time
follows the bytes of weights read; int8 weights read a quarter of fp32's, int4 an eighth (plus
one float scale per block). The exporter writes ``F.linear`` on 2-D activations as
``Gemm(A, W, transB=1)``, which the quantizer does not take, so those nodes are first rewritten
as ``MatMul(A, W^T)`` with the transposed weight stored once. Every matmul of the graphs has a
constant weight (the depth graph is unrolled per codebook), so every one is quantized; convs
(the codec's SEANet) and embedding tables (a frame reads a few rows) stay in float.

Block sizes (:data:`BLOCK_SIZE`): one fp32 scale per block costs 4/block bytes per weight, 3 %
of int8 at 128; at 4 bits a block of 32 costs 0.125 B per weight (25 % on top of 0.5 B), 64
costs 12 %, 128 costs 6 %. Smaller blocks follow a weight row's range more closely, which pays
where rows have outliers. ``bench/bench_precision.py`` measured token agreement with fp32 at
small for blocks of 32, 64 and 128 and found no block size better (46-64 % of the tokens
equal, no trend with the block size: text and face tokens agreed most at 128, audio tokens at
32), so the bytes decide: int4 uses 128, the group size of the usual int4 weight-only
checkpoints (GPTQ, AWQ), which at moshi-7b reads 0.7 GB per frame less than blocks of 32 (the
difference between 69 % and 77 % of an Orin NX's bandwidth, see the README's traffic table).
``quantize_weights(block_size=...)`` takes another size for a model whose rows need it.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .onnx_files import save_onnx

__all__ = ["BITS", "BLOCK_SIZE", "gemm_to_matmul", "quantize_weights", "graph_weight_precision"]

BITS = {"int8": 8, "int4": 4}
BLOCK_SIZE = {"int8": 128, "int4": 128}
# Mimi's graphs keep 8-bit weights in an int4 export: its residual quantizer turns small errors
# of the encoder into other codes (bench_precision at small, random weights: 1.8 % of the codes
# equal fp32's with 4-bit encoder weights, 55 % with 8-bit), and Mimi is a fixed 79 M
# parameters, 1 % of moshi-7b's weights, so 4 bits would save little where bytes matter.
CODEC_GRAPHS = ("encoder", "decoder")


def gemm_to_matmul(model) -> int:
    """Rewrite ``Gemm(A, W[, C])`` with a constant W, transA=0, alpha=beta=1 as MatMul (+ Add);
    returns how many nodes were rewritten."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    users = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    new_nodes, count = [], 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "Gemm" or len(n.input) < 2 or n.input[1] not in inits
                or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        wname = n.input[1] + "__kn"
        if wname not in inits:
            inits[wname] = numpy_helper.from_array(w, wname)
            g.initializer.append(inits[wname])
        has_c = len(n.input) > 2 and n.input[2]
        mm_out = n.output[0] + "__mm" if has_c else n.output[0]
        new_nodes.append(helper.make_node("MatMul", [n.input[0], wname], [mm_out], name=n.name + "__mm"))
        if has_c:
            new_nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "__bias"))
        users[n.input[1]] -= 1
        count += 1
    del g.node[:]
    g.node.extend(new_nodes)
    # drop the untransposed weights nothing reads any more
    keep = [t for t in g.initializer if users.get(t.name, 1) > 0 or t.name.endswith("__kn")]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model, full_check=False)
    return count


def graph_weight_precision(precision: str, graph: str) -> str:
    """The weight precision a graph gets in an export of ``precision`` (Mimi: int8 under int4)."""
    return "int8" if precision == "int4" and graph in CODEC_GRAPHS else precision


def quantize_weights(path: Path, precision: str = "int8", block_size: int | None = None,
                     external: bool = False, accuracy_level: int = 4) -> int:
    """Quantize the matmul weights of the graph at ``path`` in place to ``precision`` (int8 or
    int4; block size from :data:`BLOCK_SIZE` unless given); returns the number of MatMulNBits.
    ``accuracy_level`` 4: the activations are quantized to int8 inside the kernel (onnxruntime's
    fastest CPU path for both widths)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

    if precision not in BITS:
        raise ValueError(f"weight-only precision must be one of {sorted(BITS)}, got {precision!r}")
    model = onnx.load(str(path))
    gemm_to_matmul(model)
    cfg = DefaultWeightOnlyQuantConfig(block_size=int(block_size or BLOCK_SIZE[precision]),
                                       is_symmetric=True, bits=BITS[precision],
                                       accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        quantizer = MatMulNBitsQuantizer(model, algo_config=cfg)
        quantizer.process()
    finally:
        log.setLevel(level)
    out = quantizer.model.model
    n = sum(1 for node in out.graph.node if node.op_type == "MatMulNBits")
    save_onnx(out, Path(path), external)
    return n
