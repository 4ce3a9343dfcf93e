"""The streaming LM step as a pure function ``(user_codes, state) -> (tokens, valid, state)``.

One call = one 80 ms frame: the temporal transformer step, the text token, the depth loop over
the model's ``dep_q`` audio codebooks, and moshi's acoustic-delay bookkeeping (LMGen).

State (flat dict, static shapes, created by :meth:`LMStep.init_state`)::

    temporal.layers.{i}.k|v   [B, H, context, Dh]   temporal KV ring buffers
    temporal.offset           [1] int64             frames seen by the temporal transformer
    depformer.layers.{i}.k|v  [B, Hd, dep_q, Dhd]   depth KV (rewritten every frame)
    depformer.offset          [1] int64
    delay_cache               [B, n_q + 1, max_delay + 2] int64   delayed tokens (LMGen.cache)
    step                      [1] int64             frames processed (LMGen.offsets)

Delays (Moshi: ``[0, 0,1,1,1,1,1,1,1, 0,1,...]``): stream k at frame t carries the token of
time t - delay_k. The model generates text and its semantic codebook for time t and acoustic
codebooks for time t-1 in the same frame; the step therefore returns nothing valid for the
first ``max_delay`` frames, then at frame n the text/semantic tokens of frame n-1 together with
the acoustic tokens generated at frame n (all describing time n - max_delay), exactly as moshi's
``LMGen.step``. User codes given at frame t are written at slot ``t + delay_k`` of the buffer and
fed when due; before a stream's first real token the initial token (``card`` / ``text_card``) is
fed.

Long sessions: every state tensor has a fixed size, so memory is constant for hours. Once a
session is longer than the temporal context (small: 750 frames = 60 s, moshi-7b: 3000 = 4 min)
the temporal transformer attends to the last ``context`` frames at their true relative distances
(a sliding window; see :mod:`facebot.model.transformer`), the same as moshi's ring buffer; the
depth transformer restarts every frame and the delay buffer holds ``max_delay + 2`` frames.

Weights modes (``LMStep(model, weights=...)``): 'none' (the parameters; fp32 gives moshi's
tokens exactly), 'bf16', 'int8' (weight-only, per-channel scales): batch-1 decoding reads every
weight once per frame, so on a CPU the step time follows the bytes of weights read.

The KV buffers are updated in place (the new slot only) and also returned. ``LMGen`` wraps the
step with moshi's calling convention (``step(codes[B, 8, 1]) -> None | tokens[B, 9, 1]``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..model.lm import LMModel, ZERO_TOKEN
from .delays import Delays
from ..model.prepared_weights import linear
from ..model.sampling import SamplingConfig, make_generator, sample_token

State = Dict[str, torch.Tensor]

__all__ = ["LMStep", "LMGen", "State"]


class LMStep:
    """Pure streaming step over an :class:`LMModel` (weights are read, never changed).

    ``weights``: 'none' runs on the parameters as they are (bit-for-bit moshi semantics in
    fp32); 'bf16' / 'int8' run the matmuls on converted copies (memory-bound CPU decoding reads
    2x / 4x fewer bytes); see :meth:`LMModel.prepare`.
    """

    def __init__(self, model: LMModel, sampling: Optional[SamplingConfig] = None,
                 weights: str = "none"):
        self.model = model.eval()
        self.cfg = model.cfg
        self.sampling = sampling if sampling is not None else SamplingConfig()
        if weights != model.weights_mode or (weights != "none" and not model.prepared):
            model.prepare(weights)
        self.weights = weights
        cfg = self.cfg
        dev = model.device
        self.delays_io = Delays(cfg, dev)
        self.delays = self.delays_io.delays
        self.max_delay = cfg.max_delay
        self.CT = cfg.max_delay + 2
        self.n_user = cfg.n_q - cfg.dep_q
        self._emb = model.packed_embeddings()  # built now, not inside a compiled graph
        self._t_keys = self._keys("temporal.", model.transformer.cfg.num_layers)
        self._d_keys = self._keys("depformer.", model.depformer.cfg.num_layers)

    @staticmethod
    def _keys(prefix: str, num_layers: int):
        names = [f"layers.{i}.{kv}" for i in range(num_layers) for kv in ("k", "v")] + ["offset"]
        return [(prefix + n, n) for n in names]

    # ---- state --------------------------------------------------------------------------------
    def init_state(self, batch_size: int = 1) -> State:
        m = self.model
        state: State = {}
        for k, v in m.transformer.init_state(batch_size).items():
            state["temporal." + k] = v
        for k, v in m.depformer.init_state(batch_size).items():
            state["depformer." + k] = v
        state["delay_cache"] = self.delays_io.init_cache(batch_size, m.device)
        state["step"] = torch.zeros(1, dtype=torch.long, device=m.device)
        return state

    def _split(self, state: State) -> Tuple[State, State]:
        return ({b: state[a] for a, b in self._t_keys}, {b: state[a] for a, b in self._d_keys})

    # ---- the step -----------------------------------------------------------------------------
    def draw_noise(self, batch_size: int, generator: Optional[torch.Generator] = None
                   ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The Exp(1) noise one sampled frame consumes: ([B, top_k_text], [B, dep_q, top_k])
        (top-k 0 = the whole vocabulary); None in greedy mode."""
        sp, cfg = self.sampling, self.cfg
        if not sp.use_sampling:
            return None
        kt = sp.top_k_text if 0 < sp.top_k_text < cfg.text_out_card else cfg.text_out_card
        ka = sp.top_k if 0 < sp.top_k < cfg.card else cfg.card
        dev = self.model.device
        nt = torch.empty(batch_size, kt, device=dev).exponential_(1.0, generator=generator)
        na = torch.empty(batch_size, cfg.dep_q, ka, device=dev).exponential_(1.0, generator=generator)
        return nt, na

    def step(self, user_codes: torch.Tensor, state: State,
             generator: Optional[torch.Generator] = None,
             noise: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
             ) -> Tuple[torch.Tensor, torch.Tensor, State]:
        """See :meth:`step_hidden` (this is it without the extra input and outputs)."""
        out, valid, new_state, _, _ = self.step_hidden(user_codes, state, generator, noise)
        return out, valid, new_state

    def step_hidden(self, user_codes: torch.Tensor, state: State,
                    generator: Optional[torch.Generator] = None,
                    noise: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                    extra_input: Optional[torch.Tensor] = None,
                    ) -> Tuple[torch.Tensor, torch.Tensor, State, torch.Tensor, torch.Tensor]:
        """The step, with what a face head needs: ``extra_input`` [B, dim] (optional) is added to
        the temporal transformer's summed input embeddings (face streams); returns
        (tokens, valid, new state, h [B, dim] (temporal output after out_norm), gen [B, 1 + dep_q]
        (the text and audio tokens generated this frame, before the delay alignment)).

        user_codes [B, n_q - dep_q] (the user's Mimi codes of this frame) ->
        (tokens [B, 1 + dep_q] int64, valid [1] bool, new state).

        ``tokens`` = text + the model's audio codebooks, aligned (see module doc); they are
        ``-2`` while ``valid`` is False (the first ``max_delay`` frames). Sampling draws its noise
        from ``generator`` (:meth:`draw_noise`), or takes it as ``noise`` (what a compiled or
        exported step does: the randomness is an input, the graph stays pure).
        """
        m, cfg, sp = self.model, self.cfg, self.sampling
        B = user_codes.shape[0]
        if user_codes.dim() == 3:
            user_codes = user_codes[..., 0]
        user_codes = user_codes[:, :self.n_user]
        cache = state["delay_cache"]
        offset = state["step"]
        if noise is None and sp.use_sampling:
            noise = self.draw_noise(B, generator)
        nt, na = noise if noise is not None else (None, None)

        inp = self.delay_input(user_codes, cache, offset)
        if not torch.compiler.is_compiling():  # rebuilt if the parameters were replaced
            self._emb = m.packed_embeddings()
        x = self.embed_input(inp, self._emb)
        if extra_input is not None:
            x = x + extra_input.unsqueeze(1).to(x.dtype)

        # temporal transformer -> text
        tstate, dstate = self._split(state)
        h, tstate = m.transformer.step(x, tstate)
        h = m.out_norm(h)
        prep = m.prepared
        w_text = prep["text_linear"] if prep else m.text_linear.weight
        text_logits = linear(h, w_text, m.text_linear.bias)[:, 0]  # [B, Vt]
        text = sample_token(text_logits, sp.use_sampling, sp.temp_text, sp.top_k_text, noise=nt)

        # depth transformer over the model's audio codebooks
        dd = cfg.depformer_dim
        if prep:
            dep_in = linear(h, prep["depformer_in"]).view(B, cfg.dep_q, dd)  # all at once
            lin = prep["linears"]
        else:
            dep_in = torch.cat([m.depformer_in[m._dep_in_index(k)](h) for k in range(cfg.dep_q)], 1)
            lin = [li.weight for li in m.linears]
        norms = m.depformer_norms
        prev = text
        audio = []
        for k in range(cfg.dep_q):
            emb = m.depformer_text_emb if k == 0 else m.depformer_emb[k - 1]
            xk = dep_in[:, k:k + 1] + F.embedding(prev.unsqueeze(1), emb.weight)
            yk, dstate = m.depformer.step(xk, dstate, step_index=k)
            if norms is not None:
                yk = norms[k](yk)
            logits = linear(yk[:, 0], lin[k], m.linears[k].bias)
            prev = sample_token(logits, sp.use_sampling, sp.temp, sp.top_k,
                                noise=None if na is None else na[:, k])
            audio.append(prev)
        gen = torch.stack([text] + audio, dim=1)  # [B, 1 + dep_q]

        new_offset = offset + 1
        out, valid = self.delay_output(gen, cache, new_offset)

        new_state: State = {}
        for k, v in tstate.items():
            new_state["temporal." + k] = v
        for k, v in dstate.items():
            new_state["depformer." + k] = v
        new_state["delay_cache"] = cache
        new_state["step"] = new_offset
        return out, valid, new_state, h[:, 0], gen

    __call__ = step

    # ---- the pieces of a step that are not networks (shared with the graph runtime) -------------
    def delay_input(self, user_codes: torch.Tensor, cache: torch.Tensor,
                    offset: torch.Tensor) -> torch.Tensor:
        """See :meth:`Delays.feed`."""
        return self.delays_io.feed(user_codes, cache, offset)

    def delay_output(self, gen: torch.Tensor, cache: torch.Tensor, new_offset: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`Delays.collect`."""
        return self.delays_io.collect(gen, cache, new_offset)

    @staticmethod
    def embed_input(inp: torch.Tensor, packed: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Summed input embeddings [B, 1, D] of the fed tokens [B, K] (one lookup in the packed
        table; the zero token contributes nothing)."""
        table, rows = packed
        e = F.embedding(inp.clamp(min=0) + rows, table)  # [B, K, D]
        e = e * (inp != ZERO_TOKEN).unsqueeze(-1).to(e.dtype)
        return e.sum(dim=1, keepdim=True)


class LMGen:
    """Stateful convenience wrapper with moshi's LMGen calling convention.

    ``compile=True`` runs the step through ``torch.compile`` (inductor; about a minute to compile
    on 2 CPU cores, cached on disk afterwards); the sampling noise is drawn outside the graph
    from the session's seeded generator, so compiled and eager sessions give the same tokens for
    the same seed (up to float rounding of the fused kernels).
    """

    def __init__(self, model: LMModel, sampling: Optional[SamplingConfig] = None,
                 batch_size: int = 1, weights: str = "none", compile: bool = False):
        self.stepper = LMStep(model, sampling, weights)
        self.batch_size = batch_size
        self.generator = make_generator(self.stepper.sampling.seed, model.device)
        with torch.inference_mode():
            self.state = self.stepper.init_state(batch_size)
        self._fn = torch.compile(self.stepper.step, dynamic=False) if compile else self.stepper.step

    def reset(self, seed: Optional[int] = None) -> None:
        with torch.inference_mode():
            self.state = self.stepper.init_state(self.batch_size)
        if seed is not None or self.stepper.sampling.seed is not None:
            self.generator = make_generator(
                seed if seed is not None else self.stepper.sampling.seed, self.stepper.model.device)

    @torch.inference_mode()
    def step(self, user_codes: torch.Tensor) -> Optional[torch.Tensor]:
        """user_codes [B, n_user(, 1)] -> None for the first max_delay frames, then [B, 1+dep_q, 1]."""
        if user_codes.dim() == 3:
            user_codes = user_codes[..., 0]
        noise = self.stepper.draw_noise(user_codes.shape[0], self.generator)
        out, valid, self.state = self._fn(user_codes, self.state, None, noise)
        if not bool(valid):
            return None
        return out.unsqueeze(-1)
