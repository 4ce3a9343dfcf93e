"""Kyutai's reference Mimi (the ``moshi`` package) for parity tests and benchmarks.

A test oracle, not part of the package: the tests and bench/ import it from test/. Needs
``moshi`` (installed by ``.ci/setup`` with ``--no-deps``). moshi reads ``NO_TORCH_COMPILE`` when
its modules are imported (its lazy ``torch.compile`` wrappers are decided then), so
:func:`build_reference` imports moshi inside :func:`moshi_on_cpu`, which sets the variables only
for that block and restores the environment afterwards.

A fresh moshi Mimi has all-zero codebooks (they are learnt by k-means at the first training
batch), which would make every code 0. :func:`build_reference` therefore fills them with random
codewords drawn around the latents of a calibration clip, level by level (each level around what
the previous ones leave over), so that codes vary frame to frame the way trained ones do.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from facebot.model.codec import MimiConfig

__all__ = ["speech_like", "build_reference", "fill_codebooks", "moshi_on_cpu"]

# moshi's switches for CPU runs: no torch.compile (~20 s of lazy compiling), no CUDA graphs
_MOSHI_CPU_ENV = {"NO_TORCH_COMPILE": "1", "NO_CUDA_GRAPH": "1"}


@contextmanager
def moshi_on_cpu() -> Iterator[None]:
    """Set moshi's CPU switches (unless already set) for the block; restore the environment after."""
    saved = {k: os.environ.get(k) for k in _MOSHI_CPU_ENV}
    for key, value in _MOSHI_CPU_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def speech_like(n_samples: int, sample_rate: int = 24000, seed: int = 0,
                level: float = 0.1) -> torch.Tensor:
    """A deterministic speech-like test signal ``[1, 1, n_samples]`` (float32, RMS ~ ``level``).

    Voiced syllables (harmonics of a gliding 90-260 Hz pitch under three moving formant
    resonances) at ~4 syllables/s, unvoiced noise bursts (fricatives), pauses, a click and a
    low background noise floor.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples, dtype=torch.float64) / sample_rate
    # pitch contour and phase
    f0 = 160 + 60 * torch.sin(2 * math.pi * 0.7 * t + 1.0) + 30 * torch.sin(2 * math.pi * 2.3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    formants = [(700 + 300 * torch.sin(2 * math.pi * 1.1 * t), 90.0),
                (1200 + 500 * torch.sin(2 * math.pi * 0.9 * t + 2.0), 120.0),
                (2600 + 200 * torch.sin(2 * math.pi * 1.7 * t + 0.5), 200.0)]
    voiced = torch.zeros_like(t)
    for h in range(1, 30):
        fh = h * f0
        amp = sum(1.0 / (1.0 + ((fh - fc) / bw) ** 2) for fc, bw in formants) / h ** 0.5
        voiced += amp * torch.sin(h * phase)
    voiced /= voiced.std().clamp(min=1e-9)
    # syllable envelope (~4 Hz) with pauses
    env = torch.clamp(torch.sin(2 * math.pi * 4.1 * t) + 0.2, min=0.0) ** 0.7
    pause = (torch.sin(2 * math.pi * 0.35 * t + 0.3) > -0.6).double()
    noise = torch.randn(n_samples, generator=g, dtype=torch.float64)
    fric_env = torch.clamp(torch.sin(2 * math.pi * 1.9 * t + 2.5) - 0.7, min=0.0) * 3.0
    hp = noise - torch.roll(noise, 1)  # crude high-pass: hiss
    x = voiced * env * pause + 0.6 * hp * fric_env * pause + 0.02 * noise
    click = n_samples // 3
    x[click:click + 24] += 2.0 * torch.hann_window(24, dtype=torch.float64)
    x = x / x.pow(2).mean().sqrt().clamp(min=1e-9) * level
    return x.to(torch.float32).view(1, 1, n_samples)


@torch.no_grad()
def fill_codebooks(ref, calib: torch.Tensor, seed: int = 0) -> None:
    """Give every codebook of moshi Mimi ``ref`` random codewords around the calibration latents
    (mean + std * N(0, 1) per dimension, per level), random cluster usages, and mark it
    initialized."""
    g = torch.Generator().manual_seed(seed)
    latent = ref._encode_to_unquantized_latent(calib)  # [B, D, T]
    for rvq in (ref.quantizer.rvq_first, ref.quantizer.rvq_rest):
        residual = rvq.input_proj(latent).transpose(1, 2).reshape(-1, rvq.dimension)  # [N, d]
        for layer in rvq.vq.layers:
            cb = layer._codebook
            mean, std = residual.mean(0), residual.std(0).clamp(min=1e-6)
            emb = mean + std * torch.randn(cb.embedding_sum.shape, generator=g)
            usage = torch.rand(cb.cluster_usage.shape, generator=g) + 0.5
            cb.embedding_sum.copy_(emb * usage[:, None])
            cb.cluster_usage.copy_(usage)
            cb._initialized.fill_(1.0)
            cb.register_buffer("_embedding", None, persistent=False)  # recompute on next use
            codes = cb.encode(residual)
            residual = residual - cb.decode(codes)


def build_reference(cfg: Optional[MimiConfig] = None, seed: int = 0, calib_frames: int = 25):
    """moshi ``MimiModel`` for ``cfg`` with random weights (``torch.manual_seed(seed)``) and
    codebooks filled by :func:`fill_codebooks` on a speech-like clip; eval mode, CPU."""
    cfg = MimiConfig.mimi() if cfg is None else cfg
    torch.manual_seed(seed)
    with moshi_on_cpu():
        from moshi.models import loaders

        ref = loaders.get_mimi(None, mimi_config=cfg.moshi_config(), device="cpu",
                               num_codebooks=cfg.num_codebooks)
    ref.eval()
    calib = speech_like(calib_frames * cfg.frame_size, cfg.sample_rate, seed=seed + 1000)
    fill_codebooks(ref, calib, seed=seed)
    return ref
