"""Layers of the streaming transformer: norms, layer scale, activation-gated and plain
feed-forward, and the layer that joins attention and feed-forward.

Parameter names follow moshi's checkpoints (``layers.{i}.self_attn.in_proj_weight`` fused QKV,
``self_attn.out_proj.weight``, ``norm1.alpha|weight|bias``, ``gating.linear_in.weight``,
``gating.{step}.linear_in.weight``, ``linear1.weight``, ``layer_scale_1.scale``), so
checkpoints map 1:1.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.model.attention import Attention
from facebot.model.prepared_weights import Weight, convert_weight, linear
from facebot.model.transformer_config import TransformerConfig


def get_activation(name: str):
    if name in ("sigmoid", "tanh", "relu"):
        return getattr(torch, name)
    if name in ("leaky_relu", "elu", "gelu", "silu", "mish", "softsign"):
        return getattr(F, name)
    if name == "identity":
        return lambda x: x
    raise ValueError(f"unknown activation {name!r}")



class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, f32: bool = False, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.f32 = f32
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1, 1, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.f32 and x.dtype != torch.float32:
            y = F.rms_norm(x.float(), (self.dim,), self.alpha.view(-1).float(), self.eps)
            return y.to(x.dtype)
        return F.rms_norm(x, (self.dim,), self.alpha.view(-1).to(x.dtype), self.eps)


class LayerNormF32(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                            self.bias.float(), self.eps).to(x.dtype)


def make_norm(kind: str, dim: int, device=None, dtype=None) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5, device=device, dtype=dtype)
    if kind == "layer_norm_f32":
        return LayerNormF32(dim, eps=1e-8, device=device, dtype=dtype)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=1e-5, device=device, dtype=dtype)
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8, f32=True, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}")


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float, device=None, dtype=None):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def gating_hidden_dim(dim: int, dim_feedforward: int) -> int:
    """Hidden width of moshi's ActivationGating for a given nominal FF width."""
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


class Gating(nn.Module):
    """act(W_in x)[:h] * (W_in x)[h:] -> W_out (moshi's ActivationGating)."""

    def __init__(self, dim: int, dim_feedforward: int, activation: str, bias: bool = False,
                 device=None, dtype=None):
        super().__init__()
        hidden = gating_hidden_dim(dim, dim_feedforward)
        self.hidden = hidden
        self.act = get_activation(activation)
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=bias, device=device, dtype=dtype)
        self.linear_out = nn.Linear(hidden, dim, bias=bias, device=device, dtype=dtype)
        self.prepared: Optional[Tuple[Weight, Weight]] = None

    def prepare(self, mode: str) -> None:
        self.prepared = None if mode == "none" else (
            convert_weight(self.linear_in.weight, mode), convert_weight(self.linear_out.weight, mode))

    def forward(self, x: torch.Tensor, weights: Optional[Tuple[Weight, Weight]] = None) -> torch.Tensor:
        """``weights``: (in, out) matrices to use instead of this module's (same shapes)."""
        if weights is not None:
            w_in, w_out = weights
        elif self.prepared is None:
            w_in, w_out = self.linear_in.weight, self.linear_out.weight
        else:
            w_in, w_out = self.prepared
        h = linear(x, w_in, self.linear_in.bias)
        h = h.view(*h.shape[:-1], 2, self.hidden)
        return linear(self.act(h[..., 0, :]) * h[..., 1, :], w_out, self.linear_out.bias)



class TransformerLayer(nn.Module):
    """Pre-norm layer: ``x + ls1(attention(norm1(x)))``, then ``x + ls2(ff(norm2(x)))``; with
    weights per step, one attention and one gated FF per weight set."""

    def __init__(self, cfg: TransformerConfig, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.self_attn = Attention(cfg, **fk)
        self.norm1 = make_norm(cfg.norm, cfg.d_model, **fk)
        self.norm2 = make_norm(cfg.norm, cfg.d_model, **fk)
        m = cfg.num_weights
        self.ff_prepared: Optional[Tuple[Weight, Weight]] = None
        if cfg.gating == "none":
            if cfg.weights_per_step:
                raise ValueError("weights_per_step needs a gated FF (as in moshi)")
            if isinstance(cfg.dim_feedforward, list):
                raise ValueError("list dim_feedforward needs gating")
            self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward, bias=cfg.bias_ff, **fk)
            self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model, bias=cfg.bias_ff, **fk)
            self.act = get_activation(cfg.activation)
            self.gating = None
        else:
            self.linear1 = self.linear2 = None
            dims = cfg.dim_feedforward if isinstance(cfg.dim_feedforward, list) else [cfg.dim_feedforward] * m
            if cfg.weights_per_step:
                self.gating = nn.ModuleList(
                    [Gating(cfg.d_model, dff, cfg.gating, cfg.bias_ff, **fk) for dff in dims])
            else:
                self.gating = Gating(cfg.d_model, dims[0], cfg.gating, cfg.bias_ff, **fk)
        if cfg.layer_scale is None:
            self.layer_scale_1 = nn.Identity()
            self.layer_scale_2 = nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(cfg.d_model, cfg.layer_scale, **fk)
            self.layer_scale_2 = LayerScale(cfg.d_model, cfg.layer_scale, **fk)

    def prepare(self, mode: str) -> None:
        self.self_attn.prepare(mode)
        if self.gating is None:
            self.ff_prepared = None if mode == "none" else (
                convert_weight(self.linear1.weight, mode), convert_weight(self.linear2.weight, mode))
        elif isinstance(self.gating, nn.ModuleList):
            for g in self.gating:
                g.prepare(mode)
        else:
            self.gating.prepare(mode)

    def ff(self, x: torch.Tensor, wi: int, weights: Optional[Tuple[Weight, Weight]] = None) -> torch.Tensor:
        """The feed-forward block with weight set ``wi`` (``weights``: a gated FF's (in, out) matrices
        instead, e.g. an exported graph's per-step constants)."""
        h = self.norm2(x)
        if self.gating is None:
            w1, w2 = self.ff_prepared or (self.linear1.weight, self.linear2.weight)
            u = linear(self.act(linear(h, w1, self.linear1.bias)), w2, self.linear2.bias)
        elif isinstance(self.gating, nn.ModuleList):
            u = self.gating[wi](h, weights)
        else:
            u = self.gating(h, weights)
        return x + self.layer_scale_2(u)

    def step_layer(self, x: torch.Tensor, attend: Callable[..., torch.Tensor], wi: int = 0,
                   rope: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                   weights: Optional[Tuple[Weight, Weight, Weight, Weight]] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer on the new positions x [B, T, D] with weight set ``wi``: returns the output
        and the new keys and values [B, H, T, Dh]. ``attend(q, k, v) -> o`` is the attention
        over whatever cache the caller keeps; ``rope`` rotates q and k ([B, T, 2, H, Dh]);
        ``weights``: (qkv, out, FF in, FF out) matrices instead of weight set ``wi``'s, no
        biases (the depth graphs' per-step constants)."""
        B, T, D = x.shape
        H, Dh = self.cfg.num_heads, self.cfg.head_dim
        if weights is None:
            wq, bq, wo, bo = self.self_attn.weights(wi)
            ff = None
        else:
            (wq, wo), bq, bo, ff = weights[:2], None, None, weights[2:]
        qkv = linear(self.norm1(x), wq, bq).view(B, T, 3, H, Dh)
        qk = rope(qkv[:, :, :2]) if rope is not None else qkv[:, :, :2]
        q = qk[:, :, 0].transpose(1, 2)
        k = qk[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        o = linear(attend(q, k, v).transpose(1, 2).reshape(B, T, D), wo, bo)
        x = x + self.layer_scale_1(o)
        return self.ff(x, wi, ff), k, v
