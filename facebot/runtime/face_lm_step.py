"""The Moshi-Face streaming step: speech (LMStep) + face tokens (FaceLM) + face codec decoder.

One pure call per 80 ms frame::

    step(user_codes [B, 8], user_face_tokens [B, N] | None, state, noise)
      -> (tokens [B, 1 + dep_q], valid [1] bool, robot_face_tokens [B, N], face [B, 2, 56], state)

Per frame: the 2N face input streams (the robot's face tokens generated in the previous frame and
the user's face tokens of this frame; id K = "no token yet") are embedded and added to the LM's
summed input embeddings; the LM step runs as usual (:meth:`LMStep.step_hidden`); the Face
Transformer predicts the robot's N face tokens from ``e_all = h + e_text + sum(e_audio)`` (h: the
temporal output; e_*: the LM input embeddings of the text and audio tokens generated this frame)
and the previous frame's robot face tokens; the face codec decoder turns them into two 25 fps
FLAME core frames (expression 50 + jaw 3 + neck 3).

Alignment: with Moshi's delays (acoustic delay 1 = max_delay) the face tokens of frame n are
generated with the acoustic tokens of frame n and so describe the same time as the audio tokens
returned by that call; face frames are returned from the first call on (the audio is only valid
after ``max_delay`` calls).

State = the LM step's state + ``face.dec.*`` (the face codec decoder's state) + ``face.prev``
[B, N] int64 (the robot's face tokens of the previous frame); every tensor has a static shape.
Sampling: greedy when ``face_temp`` is 0, else temperature / top-k with Exp(1) noise that can be
given as an input (as the LM's), so a compiled step stays pure.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..model.face_codec import FaceCodec
from ..model.face_transformer import FaceLM
from ..model.sampling import sample_token
from .lm_step import LMStep, State

__all__ = ["FaceLMStep"]

Noise = Tuple[Optional[Tuple[torch.Tensor, torch.Tensor]], Optional[torch.Tensor]]


class FaceLMStep:
    """Pure streaming Moshi-Face step over an :class:`LMStep`, a :class:`FaceLM` and a causal
    :class:`FaceCodec` (weights are read, never changed)."""

    def __init__(self, lm_step: LMStep, face_lm: FaceLM, codec: FaceCodec,
                 face_temp: float = 0.0, face_top_k: int = 0):
        fc, cc = face_lm.cfg, codec.cfg
        if fc.dim_in != lm_step.cfg.dim:
            raise ValueError(f"face LM dim_in {fc.dim_in} != LM dim {lm_step.cfg.dim}")
        if (fc.num_tokens, fc.codebook_size) != (cc.num_tokens, cc.codebook_size):
            raise ValueError(f"face LM tokens {fc.num_tokens}x{fc.codebook_size} != face codec "
                             f"{cc.num_tokens}x{cc.codebook_size}")
        if face_temp < 0 or face_top_k < 0:
            raise ValueError("face_temp and face_top_k must be >= 0")
        self.lm_step = lm_step
        self.face_lm = face_lm.eval()
        self.codec = codec.eval()
        self.face_temp = float(face_temp)
        self.face_top_k = int(face_top_k)
        self.num_tokens = fc.num_tokens
        self.initial = fc.initial_token

    @property
    def face_sampling(self) -> bool:
        return self.face_temp > 0

    # ---- state --------------------------------------------------------------------------------
    def init_state(self, batch_size: int = 1) -> State:
        state = self.lm_step.init_state(batch_size)
        dev = self.lm_step.model.device
        for k, v in self.codec.init_decoder_state(batch_size, device=dev).items():
            state["face.dec." + k] = v
        state["face.prev"] = torch.full((batch_size, self.num_tokens), self.initial,
                                        dtype=torch.long, device=dev)
        return state

    def draw_noise(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Noise:
        """(the LM's noise or None, face noise [B, N, min(top_k, K)] or None)."""
        lm_noise = self.lm_step.draw_noise(batch_size, generator)
        face_noise = None
        if self.face_sampling:
            K = self.face_lm.cfg.codebook_size
            k = self.face_top_k if 0 < self.face_top_k < K else K
            face_noise = torch.empty(batch_size, self.num_tokens, k,
                                     device=self.lm_step.model.device).exponential_(1.0, generator=generator)
        return lm_noise, face_noise

    # ---- the step -----------------------------------------------------------------------------
    def step(self, user_codes: torch.Tensor, user_face_tokens: Optional[torch.Tensor],
             state: State, noise: Optional[Noise] = None,
             generator: Optional[torch.Generator] = None,
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, State]:
        B = user_codes.shape[0]
        if noise is None:
            noise = self.draw_noise(B, generator)
        lm_noise, face_noise = noise
        if user_face_tokens is not None and user_face_tokens.dim() == 3:
            user_face_tokens = user_face_tokens[..., 0]
        prev = state["face.prev"]
        lm_state = {k: v for k, v in state.items() if not k.startswith("face.")}
        dec_state = {k[len("face.dec."):]: v for k, v in state.items() if k.startswith("face.dec.")}

        extra = self.face_lm.stream_embedding(prev, user_face_tokens)  # [B, dim]
        tokens, valid, lm_new, h, gen = self.lm_step.step_hidden(
            user_codes, lm_state, generator, lm_noise, extra)

        # e_all = h + embeddings of this frame's generated text + audio tokens (LM input tables)
        table, rows = self.lm_step._emb
        e_gen = F.embedding(gen + rows[:gen.shape[1]], table).sum(1)  # [B, dim]
        e_all = h + e_gen.to(h.dtype)
        ft = self.face_lm.face_transformer
        logits = ft(e_all.to(ft.in_proj.weight.dtype), prev if ft.cfg.use_prev_tokens else None)
        face_tokens = sample_token(logits, self.face_sampling, self.face_temp, self.face_top_k,
                                   noise=face_noise)  # [B, N]
        face, dec_new = self.codec.decode_step(face_tokens.unsqueeze(-1), dec_state)

        new_state: State = dict(lm_new)
        for k, v in dec_new.items():
            new_state["face.dec." + k] = v
        new_state["face.prev"] = face_tokens
        return tokens, valid, face_tokens, face, new_state

    __call__ = step
