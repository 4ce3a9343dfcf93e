"""Weight-only int8 for exported graphs on onnxruntime (CPU): onnxruntime's own MatMulNBits
quantizer (blockwise symmetric int8, activations stay float).

Batch-1 decoding reads every weight once per frame, so on a memory-bound CPU the step time
follows the bytes of weights read; int8 weights read a quarter of fp32's. The exporter writes
``F.linear`` on 2-D activations as ``Gemm(A, W, transB=1)``, which the quantizer does not take,
so those nodes are first rewritten as ``MatMul(A, W^T)`` with the transposed weight stored
once. Gemms whose weight is computed in the graph (the depth graph gathers its per-codebook
weights by ``k``) stay in float.
"""
from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["gemm_to_matmul", "quantize_int8"]


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


def quantize_int8(path: Path, block_size: int = 128, external: bool = False,
                  accuracy_level: int = 4, bits: int = 8) -> int:
    """Quantize the graph at ``path`` in place; returns the number of int8 matmuls."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

    model = onnx.load(str(path))
    gemm_to_matmul(model)
    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=bits,
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
    from .onnx_export import _save
    _save(out, Path(path), external)
    return n
