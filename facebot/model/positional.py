"""Positional encodings of the streaming transformer: RoPE from int64 absolute positions
(float64 angles for the torch runtime; float32 angles that stay accurate at any position for
exported graphs) and moshi's sinusoidal embedding."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


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


class Rope:
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

