"""Self-attention of the streaming transformer: its weights (fused QKV ``in_proj_weight`` and
``out_proj``, one set per depth step with weights per step, stacked along dim 0 as in Kyutai's
files) and the attention over a KV cache that exported graphs run (``slot_attention``)."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.model.prepared_weights import Weight, convert_weight, linear
from facebot.model.transformer_config import TransformerConfig


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean "may attend" mask -> additive bias (0 / -inf); built with arithmetic, not a
    select on bools, so every ONNX runtime has a kernel for it."""
    keep = mask.to(dtype)
    return torch.log(keep)  # log(1) = 0, log(0) = -inf


def slot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor,
                   vc: torch.Tensor, bias_old: torch.Tensor, bias_new: torch.Tensor) -> torch.Tensor:
    """Attention of q [B, H, T, Dh] over the cached keys kc/vc [B, H, S, Dh] (bias_old [T, S])
    and the T new keys k/v (bias_new [T, T]) without writing them into the cache: one softmax
    over both score blocks. Reading the cache where it lies (no concatenation, no scatter) is
    what keeps an exported step from copying the whole cache every frame."""
    scale = q.shape[-1] ** -0.5
    s_old = torch.matmul(q, kc.to(q.dtype).transpose(-1, -2)) * scale + bias_old.to(q.dtype)
    s_new = torch.matmul(q, k.transpose(-1, -2)) * scale + bias_new.to(q.dtype)
    p = torch.softmax(torch.cat([s_old, s_new], dim=-1).float(), dim=-1).to(q.dtype)
    S = kc.shape[2]
    return torch.matmul(p[..., :S], vc.to(q.dtype)) + torch.matmul(p[..., S:], v)


class _StackedLinear(nn.Module):
    """Weights of several per-step linears stacked on dim 0 (Kyutai's file layout)."""

    def __init__(self, in_features: int, out_features: int, mult: int, bias: bool,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.mult = in_features, out_features, mult
        self.weight = nn.Parameter(torch.empty(mult * out_features, in_features, device=device,
                                               dtype=dtype))
        self.bias = (nn.Parameter(torch.zeros(mult * out_features, device=device, dtype=dtype))
                     if bias else None)
        with torch.no_grad():
            for i in range(mult):
                nn.init.kaiming_uniform_(self.weight[i * out_features:(i + 1) * out_features],
                                         a=math.sqrt(5))

    def part(self, i: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        o = self.out_features
        b = None if self.bias is None else self.bias[i * o:(i + 1) * o]
        return self.weight[i * o:(i + 1) * o], b

    def forward(self, x: torch.Tensor, i: int = 0) -> torch.Tensor:
        w, b = self.part(i)
        return F.linear(x, w, b)



class Attention(nn.Module):
    """Self-attention weights: fused QKV (``in_proj_weight``) and ``out_proj``, per weight set.
    The attention itself runs where the KV cache is (facebot.model.kv_cache)."""

    def __init__(self, cfg: TransformerConfig, device=None, dtype=None):
        super().__init__()
        d, m = cfg.d_model, cfg.num_weights
        self.d_model, self.num_heads, self.head_dim, self.mult = d, cfg.num_heads, cfg.head_dim, m
        self.in_proj_weight = nn.Parameter(torch.empty(m * 3 * d, d, device=device, dtype=dtype))
        self.in_proj_bias = (nn.Parameter(torch.zeros(m * 3 * d, device=device, dtype=dtype))
                             if cfg.bias_attn else None)
        with torch.no_grad():
            for i in range(m):
                nn.init.kaiming_uniform_(self.in_proj_weight[i * 3 * d:(i + 1) * 3 * d], a=math.sqrt(5))
        if m == 1:
            self.out_proj = nn.Linear(d, d, bias=cfg.bias_attn, device=device, dtype=dtype)
        else:
            self.out_proj = _StackedLinear(d, d, m, cfg.bias_attn, device=device, dtype=dtype)
        self.prepared: Optional[List[Tuple[Weight, Weight]]] = None

    def _raw(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        n, d = 3 * self.d_model, self.d_model
        if self.mult == 1:
            return self.in_proj_weight, self.out_proj.weight
        return self.in_proj_weight[i * n:(i + 1) * n], self.out_proj.weight[i * d:(i + 1) * d]

    def prepare(self, mode: str) -> None:
        self.prepared = None if mode == "none" else [
            tuple(convert_weight(w, mode) for w in self._raw(i)) for i in range(self.mult)]

    def weights(self, i: int) -> Tuple[Weight, Optional[torch.Tensor], Weight, Optional[torch.Tensor]]:
        """(qkv weight, qkv bias, out weight, out bias) of weight set i."""
        if self.prepared is not None:
            wq, wo = self.prepared[i]
        else:
            wq, wo = self._raw(i)
        bq = bo = None
        if self.in_proj_bias is not None:
            n, d = 3 * self.d_model, self.d_model
            bq = self.in_proj_bias[i * n:(i + 1) * n]
            bo = self.out_proj.bias if self.mult == 1 else self.out_proj.bias[i * d:(i + 1) * d]
        return wq, bq, wo, bo

    def out(self, x: torch.Tensor, i: int) -> torch.Tensor:
        _, _, w, b = self.weights(i)
        return linear(x, w, b)

