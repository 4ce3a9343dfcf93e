"""Moshi's acoustic-delay bookkeeping, apart from the networks.

Stream k at frame t carries the token of time t - delay_k. The delay buffer [B, K, max_delay + 2]
(int64, part of the step's state) holds the user's codes until they are due and the generated
tokens until the slowest stream has caught up. :class:`LMStep` and the graph runtime
(:mod:`facebot.runtime.graph_loop`) share this one implementation; it needs the config only, not
the weights.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..model.configs import LMConfig
from ..model.lm import UNGENERATED_TOKEN  # moshi: "nothing generated yet"

__all__ = ["Delays", "UNGENERATED_TOKEN"]


class Delays:
    def __init__(self, cfg: LMConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.delays = torch.tensor(cfg.delays, dtype=torch.long, device=device)
        self.max_delay = cfg.max_delay
        self.CT = cfg.max_delay + 2
        self.n_user = cfg.n_q - cfg.dep_q
        self.Du = cfg.dep_q + 1
        initial = torch.full((cfg.num_codebooks,), cfg.card, dtype=torch.long, device=device)
        initial[0] = cfg.text_card
        self.initial = initial  # [K]: text_card for the text stream, card for audio streams
        self._user_delays = self.delays[self.Du:]
        self._gen_delays = self.delays[:self.Du]

    def init_cache(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.full((batch_size, self.cfg.num_codebooks, self.CT), UNGENERATED_TOKEN,
                          dtype=torch.long, device=self.delays.device if device is None else device)

    def feed(self, user_codes: torch.Tensor, cache: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Write the user's codes [B, n_user] of frame ``offset`` into slot (t + delay) of
        ``cache`` (in place); return the tokens the temporal transformer is fed this frame
        [B, K]: the initial token until a stream's first real token is due."""
        B, CT = user_codes.shape[0], self.CT
        wpos = torch.remainder(offset + self._user_delays, CT)  # [n_user]
        cache[:, self.Du:].scatter_(2, wpos.view(1, -1, 1).expand(B, -1, 1), user_codes.unsqueeze(-1))
        inp = cache.index_select(2, torch.remainder(offset, CT))[..., 0]  # [B, K]
        return torch.where(offset <= self.delays, self.initial, inp)

    def collect(self, gen: torch.Tensor, cache: torch.Tensor, new_offset: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Write this frame's generated tokens gen [B, 1 + dep_q] at slot t + 1 (in place) and
        read the delay-aligned output: (tokens [B, 1 + dep_q], valid [1] bool)."""
        B, CT, Du = gen.shape[0], self.CT, self.Du
        cache[:, :Du].index_copy_(2, torch.remainder(new_offset, CT), gen.unsqueeze(-1))
        opos = torch.remainder(new_offset - self.max_delay + self._gen_delays, CT)
        out = cache[:, :Du].gather(2, opos.view(1, -1, 1).expand(B, -1, 1))[..., 0]
        valid = new_offset > self.max_delay
        return torch.where(valid, out, torch.full_like(out, UNGENERATED_TOKEN)), valid
