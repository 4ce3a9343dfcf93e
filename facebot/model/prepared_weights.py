"""Matmul weights for inference: converted copies (bf16, fp16, fp32, weight-only int8) of a
parameter, and the ``linear`` that runs a plain or an int8 weight."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from facebot.model.conv import few_rows_linear


class QuantWeight:
    """Weight-only int8 copy of a [out, in] weight (symmetric, one scale per output channel).

    Matmuls run as ``_weight_int8pack_mm`` with bf16 activations: 4x fewer bytes than fp32 for
    memory-bound batch-1 decoding on CPU. Built by ``prepare('int8')``; a snapshot of the weights.
    """

    __slots__ = ("q", "scale", "out_features")

    def __init__(self, w: torch.Tensor):
        w = w.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(torch.bfloat16)
        self.out_features = w.shape[0]

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]


Weight = Union[torch.Tensor, QuantWeight]


def linear(x: torch.Tensor, w: Weight, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear for a plain weight (cast around it when the weight has another dtype) or a
    QuantWeight."""
    if isinstance(w, torch.Tensor):
        if w.dtype == x.dtype:
            return few_rows_linear(x, w, b)  # Mimi's transformers run 2 rows per step
        y = F.linear(x.to(w.dtype), w, None if b is None else b.to(w.dtype)).to(x.dtype)
        return y
    shp = x.shape
    y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shp[-1]).to(torch.bfloat16), w.q, w.scale)
    y = y.view(*shp[:-1], w.out_features).to(x.dtype)
    if b is not None:
        y = y + b
    return y


def convert_weight(w: torch.Tensor, mode: str) -> Weight:
    """mode: 'none' (the parameter itself), 'bf16', 'fp16', 'fp32' (a converted copy), 'int8'."""
    w = w.detach()
    if mode == "none":
        return w
    if mode == "int8":
        return QuantWeight(w)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[mode]
    return w.to(dt).contiguous()
