"""One 80 ms duplex step composed from the step graphs, on any runner (torch, onnxruntime,
TensorRT).

Per frame::

    encoder(pcm) -> user codes -> Delays.feed -> [face_embed(prev, user face)] ->
    temporal(tokens, extra) -> text, h -> depth(h, text) -> the dep_q audio tokens ->
    [face_head(h, gen, prev) -> face tokens, FLAME frames] -> Delays.collect ->
    decoder(robot codes) once the delays are filled

The host does only what is not a network: the delay buffer (:class:`Delays`), drawing the
sampling noise from the session's generator (same draws, same order as :class:`LMStep` and
:class:`FaceLMStep`, so a seed gives the same tokens as the torch step), and passing small
tensors between graphs. Greedy = noise of ones at temperature 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from ..model.configs import LMConfig
from ..model.sampling import SamplingConfig, make_generator
from .delays import Delays
from .graph_runner import GraphRunner

__all__ = ["GraphStepResult", "GraphDuplexStep"]


@dataclass
class GraphStepResult:
    """What one frame gives: the robot's pcm (None while the delays fill), the delay-aligned
    tokens [1 + dep_q] (text first; -2 while invalid), and FLAME core frames [2, 56] (or None
    without a face model)."""
    audio: Optional[np.ndarray]
    tokens: np.ndarray
    valid: bool
    face: Optional[np.ndarray] = None


class GraphDuplexStep:
    """The step over a dict of runners named as the graphs (encoder, temporal, depth, decoder,
    and optionally face_embed + face_head)."""

    def __init__(self, runners: Dict[str, GraphRunner], cfg: LMConfig,
                 sampling: Optional[SamplingConfig] = None, face_temp: float = 0.0):
        need = {"encoder", "temporal", "depth", "decoder"}
        if not need <= set(runners):
            raise ValueError(f"graph loop: missing graphs {sorted(need - set(runners))}")
        self.r = runners
        self.cfg = cfg
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.face_temp = float(face_temp)
        self.has_face = "face_head" in runners and "face_embed" in runners
        self.device = runners["temporal"].device
        self.delays = Delays(cfg, self.device)
        self.kt = runners["temporal"].spec.inputs["text_noise"][0][-1]
        self.ka = runners["depth"].spec.inputs["audio_noise"][0][-1]
        if self.has_face:
            self.face_shape = runners["face_head"].spec.inputs["face_noise"][0]
            self.face_initial = int(runners["face_head"].spec.entry["meta"]["face_initial"])
        self.reset()

    def reset(self, seed: Optional[int] = None) -> None:
        for r in self.r.values():
            r.reset()
        self.cache = self.delays.init_cache(1, self.device)
        self.offset = torch.zeros(1, dtype=torch.long, device=self.device)
        s = seed if seed is not None else self.sampling.seed
        self.generator = make_generator(s, self.device) if s is not None else None
        if self.has_face:
            n = self.r["face_head"].spec.inputs["prev"][0][-1]
            self.face_prev = torch.full((1, n), self.face_initial, dtype=torch.long, device=self.device)

    # ---- noise, as LMStep.draw_noise / FaceLMStep.draw_noise draw it ----------------------------
    def _noise(self):
        sp, dev = self.sampling, self.device
        if not sp.use_sampling:
            ones_t = torch.ones(1, self.kt, device=dev)
            ones_a = torch.ones(1, self.cfg.dep_q, self.ka, device=dev)
            return ones_t, ones_a, 1.0, 1.0
        g = self.generator
        nt = torch.empty(1, self.kt, device=dev).exponential_(1.0, generator=g)
        na = torch.empty(1, self.cfg.dep_q, self.ka, device=dev).exponential_(1.0, generator=g)
        temp_t = sp.temp_text if sp.temp_text > 0 else 1.0
        temp_a = sp.temp if sp.temp > 0 else 1.0
        if sp.temp_text <= 0:
            nt.fill_(1.0)
        if sp.temp <= 0:
            na.fill_(1.0)
        return nt, na, temp_t, temp_a

    def _face_noise(self):
        if self.face_temp <= 0:
            return torch.ones(self.face_shape, device=self.device), 1.0
        n = torch.empty(self.face_shape, device=self.device).exponential_(1.0, generator=self.generator)
        return n, self.face_temp

    # ---- the step ----------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, pcm: np.ndarray | torch.Tensor,
             user_face_tokens: Optional[torch.Tensor] = None) -> GraphStepResult:
        r, cfg = self.r, self.cfg
        pcm = torch.as_tensor(pcm, dtype=torch.float32).reshape(1, 1, -1)
        codes = r["encoder"].run(pcm=pcm)["codes"]
        user = codes[:, :self.delays.n_user, 0].to(self.device)
        tokens_in = self.delays.feed(user, self.cache, self.offset)
        nt, na, temp_t, temp_a = self._noise()
        if self.has_face:
            fnoise, ftemp = self._face_noise()
            uf = (user_face_tokens if user_face_tokens is not None
                  else torch.full_like(self.face_prev, self.face_initial))
            extra = r["face_embed"].run(robot_prev=self.face_prev, user=uf.reshape(1, -1))["extra"]
        else:
            extra = torch.zeros(1, cfg.dim, device=self.device)
        out = r["temporal"].run(tokens=tokens_in, extra=extra, text_noise=nt,
                                text_temp=torch.tensor([temp_t]))
        text = out["text"].clone()
        h = out["h"]  # the temporal runner's buffer: valid until its next run
        robot = r["depth"].run(h=h, text=text, audio_noise=na, audio_temp=torch.tensor([temp_a]))["tokens"]
        gen_t = torch.cat([text.view(1, 1), robot.to(text.device)], dim=1)  # [1, 1 + dep_q]
        face = None
        if self.has_face:
            fo = r["face_head"].run(h=h, gen=gen_t, prev=self.face_prev, face_noise=fnoise,
                                    face_temp=torch.tensor([ftemp]))
            self.face_prev = fo["face_tokens"].clone()
            face = fo["face"][0].float().cpu().numpy().copy()
        self.offset = self.offset + 1
        aligned, valid = self.delays.collect(gen_t, self.cache, self.offset)
        valid = bool(valid)
        audio = None
        if valid:
            audio = r["decoder"].run(codes=aligned[:, 1:].unsqueeze(-1))["pcm"]
            audio = audio.reshape(-1).float().cpu().numpy().copy()
        return GraphStepResult(audio=audio, tokens=aligned[0].cpu().numpy(), valid=valid, face=face)
