"""Streaming transformer with explicit, static-shape state (designed for export).

One implementation serves the Moshi temporal transformer, the depth transformer ("depformer",
weights per step) and the Mimi codec's encoder/decoder transformers.

State
-----
``init_state(B)`` returns a flat, ordered ``dict[str, Tensor]``::

    layers.{i}.k, layers.{i}.v   [B, H, capacity, Dh]   KV ring buffers (fixed capacity)
    offset                       [1] int64              absolute position of the next input

``step(x, state)`` writes the K/V of the ``T`` new positions into slots
``(offset + t) % capacity`` (in place, only those slots), attends with a mask computed from the
counter alone, and returns ``(y, new_state)`` whose ``offset`` is ``offset + T``. Nothing else is
hidden in the module: two states can be stepped independently with the same module.

What the model sees after wrap-around
-------------------------------------
Slot ``s`` holds position ``last - ((last - s) mod capacity)`` (``last`` = newest position
written), so after wrap-around the buffer is a sliding window over the last ``capacity``
positions. RoPE is applied to keys when they are written, with their absolute position, and to
queries with theirs, so the attention logits depend on the true relative distance ``q - k``
(0 .. capacity-1) whatever the absolute position: hour 3 looks exactly like minute 1 to the
model, with the oldest frames forgotten. A key is visible when ``0 <= q - k < context``. Each
layer attends directly to the last ``context`` positions; through the lower layers' cached K/V
(computed when those positions were current) information reaches back up to ``num_layers *
context`` positions, exactly as in a non-streaming pass with the same sliding-window causal mask
(``forward``), which the streaming step equals (tests). Absolute angles are computed in float64
from the int64 counter (moshi uses float32, whose angle error grows with the position: ~1e-2 rad
at 10^5 positions, i.e. after ~2 h at 12.5 Hz). The counter must start at 0 with zeroed buffers
(``init_state``): slots are valid by arithmetic on the counter, not by a written flag.

This is the same window as moshi's ``RingKVCache`` (capacity = context): in particular, when
``T > 1`` positions are fed at once after wrap-around, the first of them sees ``T - 1`` fewer
keys than in a non-streaming pass, because the newest keys have already overwritten them (moshi
behaves the same). Set ``kv_capacity = context + T - 1`` to make streaming equal to
``forward`` exactly in that case too.

Weights per step (depformer)
----------------------------
With ``weights_per_step = N`` the layer holds N sets of attention and FF weights; ``step`` takes
``step_index`` (a Python int, so the depth loop unrolls into a static graph) and the positions are
``step_index + t`` (the depformer restarts every frame); slots ``[0, step_index + T)`` are
attended, so no reset of the state is ever needed between frames.

Parameter names follow moshi's checkpoints (``layers.{i}.self_attn.in_proj_weight`` fused QKV,
``self_attn.out_proj.weight``, ``norm1.alpha|weight|bias``, ``gating.linear_in.weight``,
``gating.{step}.linear_in.weight``, ``linear1.weight``, ``layer_scale_1.scale``); per-step
attention weights are stacked along dim 0 exactly as in Kyutai's files.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.model.conv import few_rows_linear

State = Dict[str, torch.Tensor]

__all__ = [
    "TransformerConfig",
    "StreamingTransformer",
    "TransformerLayer",
    "Attention",
    "RMSNorm",
    "LayerScale",
    "Gating",
    "make_norm",
    "get_activation",
    "gating_hidden_dim",
    "rope_tables",
    "rope_angles",
    "apply_rope",
    "QuantWeight",
    "linear",
    "convert_weight",
    "sin_embedding",
    "slot_attention",
    "slot_updates",
    "mask_to_bias",
    "State",
]


@dataclass
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: Union[int, List[int]] = 2048
    causal: bool = True
    context: Optional[int] = None  # attention window in positions (keys with q - k < context)
    max_period: float = 10000.0
    norm: str = "layer_norm"  # layer_norm | layer_norm_f32 | rms_norm | rms_norm_f32
    gating: str = "none"  # none | silu | gelu | relu | ... (activation-gated FF)
    layer_scale: Optional[float] = None
    positional_embedding: str = "rope"  # rope | none | sin | sin_rope
    positional_scale: float = 1.0
    bias_ff: bool = False
    bias_attn: bool = False
    weights_per_step: int = 0
    weights_per_step_schedule: Optional[List[int]] = None
    activation: str = "gelu"  # FF activation when gating == 'none'
    kv_capacity: Optional[int] = None  # default: context, else weights_per_step

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} not divisible by num_heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2 and "rope" in self.positional_embedding:
            raise ValueError("RoPE needs an even head dimension")
        if self.positional_embedding not in ("rope", "none", "sin", "sin_rope"):
            raise ValueError(f"unknown positional_embedding {self.positional_embedding!r}")
        if self.norm not in ("layer_norm", "layer_norm_f32", "rms_norm", "rms_norm_f32"):
            raise ValueError(f"unknown norm {self.norm!r}")
        if self.weights_per_step_schedule is not None:
            if len(self.weights_per_step_schedule) != self.weights_per_step:
                raise ValueError("weights_per_step_schedule must have weights_per_step entries")
        if isinstance(self.dim_feedforward, list) and len(self.dim_feedforward) != self.num_weights:
            raise ValueError("a list dim_feedforward needs one entry per weight set")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def num_weights(self) -> int:
        """Number of weight sets per layer (1, or weights_per_step / schedule size)."""
        if not self.weights_per_step:
            return 1
        if self.weights_per_step_schedule is not None:
            return max(self.weights_per_step_schedule) + 1
        return self.weights_per_step

    @property
    def capacity(self) -> int:
        if self.kv_capacity is not None:
            return int(self.kv_capacity)
        if self.context is not None:
            return int(self.context)
        if self.weights_per_step:
            return int(self.weights_per_step)
        raise ValueError("a streaming transformer needs a context or kv_capacity")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------
# small modules (names follow moshi so checkpoints map 1:1)


def get_activation(name: str):
    if name in ("sigmoid", "tanh", "relu"):
        return getattr(torch, name)
    if name in ("leaky_relu", "elu", "gelu", "silu", "mish", "softsign"):
        return getattr(F, name)
    if name == "identity":
        return lambda x: x
    raise ValueError(f"unknown activation {name!r}")


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


# --------------------------------------------------------------------------------------------
# positions


def _freqs(head_dim: int, max_period: float, device) -> torch.Tensor:
    ds = torch.arange(head_dim // 2, device=device, dtype=torch.float64)
    return torch.exp(ds * (-math.log(max_period) * 2.0 / head_dim))


def rope_angles(positions: torch.Tensor, head_dim: int, max_period: float,
                freqs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RoPE angles [T, Dh/2] in float64 for int64 absolute positions [T], reduced mod 2 pi."""
    if freqs is None:
        freqs = _freqs(head_dim, max_period, positions.device)
    ang = positions.to(torch.float64)[:, None] * freqs[None, :]
    return torch.remainder(ang, 2.0 * math.pi)


SPLIT = 1024  # positions = hi * SPLIT + lo for the float32 angles of exported graphs


def rope_angles_f32(positions: torch.Tensor, head_dim: int, max_period: float) -> torch.Tensor:
    """RoPE angles [T, Dh/2] in float32 that stay accurate at any position, for exported graphs
    (TensorRT has no float64): angle = hi * ((SPLIT * f) mod 2 pi) + lo * f with hi, lo from
    integer arithmetic and the reduced constant folded in float64 at export, so the error
    grows with hi = position / 1024 (~5e-5 rad after 3 h), not with the position."""
    freqs = _freqs(head_dim, max_period, positions.device)
    step = torch.remainder(freqs * SPLIT, 2.0 * math.pi).float()
    hi = torch.div(positions, SPLIT, rounding_mode="floor").float()[:, None]
    lo = torch.remainder(positions, SPLIT).float()[:, None]
    ang = hi * step[None, :] + lo * freqs.float()[None, :]
    return torch.remainder(ang, 2.0 * math.pi)


def rope_tables(positions: torch.Tensor, head_dim: int, max_period: float,
                dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [T, Dh/2] for int64 absolute positions [T] (angles in float64)."""
    ang = rope_angles(positions, head_dim, max_period)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE ([r0, i0, r1, i1, ...], moshi's layout) on x [..., Dh] where cos and
    sin already broadcast against x[..., :Dh/2] (shape e.g. [T, 1, 1, Dh/2])."""
    xs = x.unflatten(-1, (-1, 2))
    xr, xi = xs[..., 0], xs[..., 1]
    out = torch.stack((xr * cos - xi * sin, xr * sin + xi * cos), dim=-1)
    return out.flatten(-2)


class _Rope:
    """Per-call RoPE: one complex multiply for fp32/fp64 activations, real formula otherwise."""

    __slots__ = ("cis", "cos", "sin")

    def __init__(self, ang: torch.Tensor, dtype: torch.dtype, real: bool = False):
        ang = ang[:, None, None, :]  # [T, 1(q|k), 1(H), Dh/2] against [B, T, 2, H, Dh/2]
        # complex multiply: one kernel in eager; inductor has no complex codegen -> real formula
        # (real=True: exported graphs, which have no complex type)
        if dtype in (torch.float32, torch.float64) and not real and not torch.compiler.is_compiling():
            cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
            self.cis = torch.polar(torch.ones_like(ang), ang).to(cdt)
            self.cos = self.sin = None
        else:
            self.cis = None
            self.cos, self.sin = torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)

    def __call__(self, qk: torch.Tensor) -> torch.Tensor:
        if self.cis is not None:
            c = torch.view_as_complex(qk.unflatten(-1, (-1, 2)))
            return torch.view_as_real(c * self.cis).flatten(-2)
        return apply_rope(qk, self.cos, self.sin)


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """moshi's create_sin_embedding ([cos | sin]) for int64 positions [T] -> [T, dim]."""
    half = dim // 2
    adim = torch.arange(half, device=positions.device, dtype=torch.float64)
    phase = positions.to(torch.float64)[:, None] / (max_period ** (adim / (half - 1)))[None, :]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1).to(dtype)


# --------------------------------------------------------------------------------------------
# attention and layer


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


@contextmanager
def slot_updates(module: nn.Module):
    """Within the block, every StreamingTransformer in ``module`` returns its new K/V slots
    instead of writing them (the form an exported graph takes; see StreamingTransformer.step)."""
    tfs = [m for m in module.modules() if isinstance(m, StreamingTransformer)]
    before = [t.kv_update for t in tfs]
    for t in tfs:
        t.kv_update = "slot"
    try:
        yield module
    finally:
        for t, b in zip(tfs, before):
            t.kv_update = b


class Attention(nn.Module):
    """Self-attention with fused QKV (`in_proj_weight`) and `out_proj`, ring-buffer KV cache."""

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

    # kept for callers of the first version
    def qkv_weight(self, i: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        w, b, _, _ = self.weights(i)
        return w, b

    def out(self, x: torch.Tensor, i: int) -> torch.Tensor:
        _, _, w, b = self.weights(i)
        return linear(x, w, b)


class TransformerLayer(nn.Module):
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


# --------------------------------------------------------------------------------------------


class StreamingTransformer(nn.Module):
    """Causal transformer with a pure streaming step; see the module docstring."""

    def __init__(self, cfg: TransformerConfig, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([TransformerLayer(cfg, device=device, dtype=dtype)
                                     for _ in range(cfg.num_layers)])
        self.use_rope = cfg.positional_embedding in ("rope", "sin_rope")
        self.use_sin = cfg.positional_embedding in ("sin", "sin_rope")
        streamable = bool(cfg.context or cfg.kv_capacity or cfg.weights_per_step)
        self.register_buffer("_slots", torch.arange(cfg.capacity if streamable else 0,
                                                    device=device, dtype=torch.long),
                             persistent=False)  # slot indices of the ring buffer
        self.weights_mode = "none"
        # "inplace": step() writes the new K/V slots into the state's buffers (torch runtime);
        # "slot": step() leaves the buffers alone and returns the new slots under the buffers'
        # names (shape [B, H, T, Dh]) for the runtime to write (exported graphs: see slot_updates)
        self.kv_update = "inplace"

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (after ``to_empty()`` from the meta device)."""
        with torch.no_grad():
            self._slots.copy_(torch.arange(self._slots.numel(), device=self._slots.device))

    def prepare(self, mode: str = "none") -> "StreamingTransformer":
        """Matmul weights for inference: 'none' (use the parameters, default), 'bf16'/'fp16'
        (converted copies, activations stay in their dtype), 'int8' (weight-only int8).
        Converted weights are a snapshot: call again after loading new weights."""
        if mode not in ("none", "bf16", "fp16", "fp32", "int8"):
            raise ValueError(f"unknown weights mode {mode!r}")
        for layer in self.layers:
            layer.prepare(mode)
        self.weights_mode = mode
        return self

    # ---- state ------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.cfg.capacity

    def _param_like(self) -> torch.Tensor:
        return self.layers[0].self_attn.in_proj_weight

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        p = self._param_like()
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        c = self.cfg
        shape = (batch_size, c.num_heads, self.capacity, c.head_dim)
        state: State = {}
        for i in range(c.num_layers):
            state[f"layers.{i}.k"] = torch.zeros(shape, device=device, dtype=dtype)
            state[f"layers.{i}.v"] = torch.zeros(shape, device=device, dtype=dtype)
        state["offset"] = torch.zeros(1, device=device, dtype=torch.long)
        return state

    def _weight_index(self, step_index: int) -> int:
        s = self.cfg.weights_per_step_schedule
        return s[step_index] if s is not None else step_index

    def _rope(self, pos: torch.Tensor, dtype: torch.dtype) -> Optional[_Rope]:
        if not self.use_rope:
            return None
        c = self.cfg
        if self.kv_update == "slot":  # exported graph: no complex numbers, no float64
            return _Rope(rope_angles_f32(pos, c.head_dim, c.max_period), dtype, real=True)
        return _Rope(rope_angles(pos, c.head_dim, c.max_period), dtype)

    # ---- streaming --------------------------------------------------------------------------
    def step(self, x: torch.Tensor, state: State,
             step_index: Optional[int] = None) -> Tuple[torch.Tensor, State]:
        """x [B, T, D] for T new positions -> (y [B, T, D], new state).

        The KV buffers of ``state`` are updated in place (only the T new slots); the returned dict
        holds them and a new ``offset``. With weights_per_step, ``step_index`` (int) selects the
        weights and is the position (the depformer restarts each frame).
        """
        c = self.cfg
        if not c.causal:
            raise ValueError("streaming needs a causal transformer")
        B, T, D = x.shape
        cap = self.capacity
        offset = state["offset"]
        if c.weights_per_step:
            if step_index is None:
                raise ValueError("weights_per_step: step() needs step_index")
            if T != 1:
                raise ValueError("weights_per_step: feed one position per step")
            if step_index + T > cap or step_index + T > c.weights_per_step:
                raise ValueError(f"step_index {step_index} + T {T} exceeds {c.weights_per_step} steps")
            wi = self._weight_index(step_index)
            n = step_index + T
            mask = write = None
            need_pos = self.use_rope or self.use_sin
            pos_q = (torch.full((T,), step_index, device=x.device, dtype=torch.long)
                     if need_pos else None)
        else:
            wi = 0
            pos_q = offset if T == 1 else offset + torch.arange(T, device=x.device, dtype=torch.long)
            last = offset + (T - 1) if T > 1 else offset
            slots = self._slots
            pos_k = last - torch.remainder(last - slots, cap)  # position held by each slot
            delta = pos_q[:, None] - pos_k[None, :]
            mask = (pos_k >= 0) & (delta >= 0)
            if c.context is not None:
                mask = mask & (delta < c.context)
            write = torch.remainder(pos_q, cap)
        if self.use_sin:
            x = x + c.positional_scale * sin_embedding(pos_q, D, c.max_period, x.dtype)
        rope = self._rope(pos_q, x.dtype) if self.use_rope else None
        slot_bias = None
        updates: State = {}
        if self.kv_update == "slot":
            if c.weights_per_step:
                raise ValueError("slot updates: the per-step depth transformer is exported by "
                                 "facebot.export.graphs.DepthGraph")
            slot_bias = self._slot_biases(offset, pos_q, T)
        for i, layer in enumerate(self.layers):
            kc, vc = state[f"layers.{i}.k"], state[f"layers.{i}.v"]

            def attend(q, k, v, kc=kc, vc=vc):
                if slot_bias is not None:
                    return slot_attention(q, k, v, kc, vc, *slot_bias)
                if mask is None:  # frame-local (depformer): static slice, no mask needed
                    kc[:, :, step_index:n] = k
                    vc[:, :, step_index:n] = v
                    return F.scaled_dot_product_attention(q, kc[:, :, :n], vc[:, :, :n])
                kc.index_copy_(2, write, k if k.dtype == kc.dtype else k.to(kc.dtype))
                vc.index_copy_(2, write, v if v.dtype == vc.dtype else v.to(vc.dtype))
                return F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)

            x, k, v = layer.step_layer(x, attend, wi, rope)
            if slot_bias is not None:
                updates[f"layers.{i}.k"], updates[f"layers.{i}.v"] = k.to(kc.dtype), v.to(vc.dtype)
        new_state = dict(state)
        new_state.update(updates)
        if c.weights_per_step:
            new_state["offset"] = torch.full_like(offset, step_index + T)
        else:
            new_state["offset"] = offset + T
        return x, new_state

    def _slot_biases(self, offset: torch.Tensor, pos_q: torch.Tensor, T: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Additive attention biases for "slot" updates: [T, capacity] over the buffers as they
        are (the slots this call overwrites and positions out of context hidden) and [T, T] over
        the new keys (causal within context). Together they select exactly the keys that the
        in-place step attends to after its write."""
        c, cap = self.cfg, self.capacity
        slots = self._slots
        last = offset - 1  # newest position already in the buffers
        pos_old = last - torch.remainder(last - slots, cap)
        overwritten = torch.remainder(slots - offset, cap) < T
        d_old = pos_q[:, None] - pos_old[None, :]
        m_old = (pos_old >= 0)[None, :] & ~overwritten[None, :]
        d_new = pos_q[:, None] - pos_q[None, :]
        m_new = d_new >= 0
        if c.context is not None:
            m_old = m_old & (d_old < c.context)
            m_new = m_new & (d_new < c.context)
        return mask_to_bias(m_old), mask_to_bias(m_new)

    # ---- non-streaming ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Whole sequence x [B, T, D] at positions offset..offset+T-1 (causal within context).

        With weights_per_step, position t uses weight set t (as the depformer in training).
        """
        c = self.cfg
        B, T, D = x.shape
        pos = torch.arange(T, device=x.device, dtype=torch.long) + offset
        if c.weights_per_step and T > c.weights_per_step:
            raise ValueError(f"weights_per_step: at most {c.weights_per_step} positions")
        mask = None
        if c.causal:
            delta = pos[:, None] - pos[None, :]
            mask = delta >= 0
            if c.context is not None:
                mask = mask & (delta < c.context)
        if self.use_sin:
            x = x + c.positional_scale * sin_embedding(pos, D, c.max_period, x.dtype)
        rope = self._rope(pos, x.dtype)
        H, Dh = c.num_heads, c.head_dim
        per_step = bool(c.weights_per_step)
        for layer in self.layers:
            attn = layer.self_attn
            h = layer.norm1(x)
            if per_step:
                ws = [attn.weights(self._weight_index(t)) for t in range(T)]
                qkv = torch.cat([linear(h[:, t:t + 1], ws[t][0], ws[t][1]) for t in range(T)], dim=1)
            else:
                wq, bq, wo, bo = attn.weights(0)
                qkv = linear(h, wq, bq)
            qkv = qkv.view(B, T, 3, H, Dh)
            qk = rope(qkv[:, :, :2]) if rope is not None else qkv[:, :, :2]
            q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)
            v = qkv[:, :, 2].transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            o = o.transpose(1, 2).reshape(B, T, D)
            if per_step:
                o = torch.cat([linear(o[:, t:t + 1], ws[t][2], ws[t][3]) for t in range(T)], 1)
            else:
                o = linear(o, wo, bo)
            x = x + layer.layer_scale_1(o)
            if per_step:
                x = torch.cat([layer.ff(x[:, t:t + 1], self._weight_index(t)) for t in range(T)], 1)
            else:
                x = layer.ff(x, 0)
        return x
