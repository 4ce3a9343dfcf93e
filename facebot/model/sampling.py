"""Token sampling: greedy, or temperature + top-k, reproducible with a torch.Generator.

Sampling uses the exponential-race form of the categorical draw (``argmax(p / E)``, ``E ~ Exp(1)``),
as moshi does: one kernel, no host synchronisation, and the noise can be given as an input when
the graph is exported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["SamplingConfig", "sample_token", "sample_with_noise", "make_generator"]


@dataclass
class SamplingConfig:
    """Moshi's LMGen defaults; ``use_sampling=False`` is greedy (used by the parity tests)."""
    use_sampling: bool = True
    temp: float = 0.8  # audio
    top_k: int = 250
    temp_text: float = 0.7
    top_k_text: int = 25
    seed: Optional[int] = None

    @classmethod
    def greedy(cls) -> "SamplingConfig":
        return cls(use_sampling=False)

    def __post_init__(self) -> None:
        if self.temp < 0 or self.temp_text < 0:
            raise ValueError("temperatures must be >= 0 (0 means greedy)")
        if self.top_k < 0 or self.top_k_text < 0:
            raise ValueError("top_k must be >= 0 (0 means the whole vocabulary)")


def make_generator(seed: Optional[int], device="cpu") -> Optional[torch.Generator]:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def sample_token(logits: torch.Tensor, use_sampling: bool = False, temp: float = 1.0,
                 top_k: int = 0, generator: Optional[torch.Generator] = None,
                 noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits [..., V] -> tokens [...] (int64).

    Greedy (argmax) when ``use_sampling`` is False or ``temp <= 0``. Otherwise softmax(logits /
    temp) restricted to the ``top_k`` largest (0: all), drawn with ``generator`` (or the global
    RNG), or with the given Exp(1) ``noise`` of shape [..., min(top_k, V)].
    """
    if not use_sampling or temp <= 0.0:
        return torch.argmax(logits, dim=-1)
    if noise is None:
        V = logits.shape[-1]
        width = top_k if 0 < top_k < V else V
        noise = torch.empty(*logits.shape[:-1], width, device=logits.device).exponential_(
            1.0, generator=generator)
    return sample_with_noise(logits, noise, temp, top_k)


def sample_with_noise(logits: torch.Tensor, noise: torch.Tensor, temp, top_k: int) -> torch.Tensor:
    """The exponential race with given Exp(1) noise [..., min(top_k, V)]: argmax of
    softmax(top-k logits / temp) / noise. ``temp`` may be a float or a [1] tensor (an exported
    graph's input); noise of ones gives the argmax."""
    logits = logits.float()
    V = logits.shape[-1]
    if 0 < top_k < V:
        vals, idx = torch.topk(logits, top_k, dim=-1)
    else:
        vals, idx = logits, None
    probs = torch.softmax(vals / temp, dim=-1)
    choice = torch.argmax(probs / noise, dim=-1, keepdim=True)
    if idx is None:
        return choice[..., 0]
    return idx.gather(-1, choice)[..., 0]
