"""The six graphs of one 80 ms step, as modules with positional tensors in and out.

Each graph is ``forward(*data_inputs, *state) -> (*data_outputs, *state_outputs)`` with static
shapes (batch, top-k, capacities are fixed when the graph is built):

=============  ==========================================================  ===========================
graph          data inputs                                                 data outputs
=============  ==========================================================  ===========================
encoder        pcm [B, 1, 1920]                                            codes [B, K, 1]
temporal       tokens [B, 1+n_q], extra [B, D], text_noise, text_temp      text [B], h [B, D]
depth          h [B, D], text [B], audio_noise, audio_temp                 tokens [B, dep_q]
decoder        codes [B, dep_q, 1]                                         pcm [B, 1, 1920]
face_embed     robot_prev [B, N], user [B, N]                              extra [B, D]
face_head      h [B, D], gen [B, 1+dep_q], prev [B, N], face_noise, temp   face_tokens [B, N], face [B, 2, 56]
=============  ==========================================================  ===========================

State: every state tensor is an explicit input; its output is the next value of the whole
tensor or, for KV ring buffers, only the slots this step writes (the graph form runtimes run:
:mod:`facebot.runtime.step_graph`). The attention reads the buffer where it lies and the runtime
writes the new slots into it in place. An exported graph that returns a whole updated KV cache
copies every cache every frame (ScatterElements / full-cache copies dominate the step); one that
returns the slot costs what the slot costs. Ring buffers' slots go where their counter pointed
before the step. The depth graph is the whole depth transformer of a frame, unrolled over the codebooks
(its K/V restart every frame, so they stay inside the graph).

Sampling is in the graphs, with its randomness as an input (Exp(1) noise, see
:mod:`facebot.model.sampling`) and the temperature as a [1] tensor: noise of ones gives greedy
tokens, so one graph serves both, and temperature changes need no new graph.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..model.codec import MimiCodec
from ..model.face_codec import FaceCodec
from ..model.face_transformer import FaceLM
from ..model.lm import LMModel
from ..model.sampling import sample_with_noise
from ..model.transformer import (mask_to_bias, rope_tables, apply_rope,
                                 sin_embedding, slot_attention, slot_updates)
from ..runtime.lm_step import LMStep
from ..runtime.step_graph import SlotRule, StepGraph

__all__ = ["EncoderGraph", "DecoderGraph", "TemporalGraph", "DepthGraph", "DepthSubstepGraph",
           "FaceEmbedGraph", "FaceHeadGraph", "graph_sample", "build_graphs"]


# sampling inside a graph: noise [..., k] and temp [1] are graph inputs (same arithmetic as the
# torch step's sample_token with that noise)
graph_sample = sample_with_noise


class _CodecGraph(StepGraph):
    def __init__(self, codec: MimiCodec, batch_size: int = 1):
        super().__init__()
        self.codec = codec.eval()
        self.batch_size = batch_size
        st = self.init_state()
        self.state_names = list(st)
        with torch.inference_mode(), slot_updates(self.codec):
            _, new = self._step(self.example_data()[0], dict(st))
        self._ring_rules(st, new)

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        with slot_updates(self.codec):
            y, new = self._step(x, dict(zip(self.state_names, state)))
        return self._pack((y,), new)


class EncoderGraph(_CodecGraph):
    """Mimi encoder step: pcm [B, 1, frame] -> codes [B, K, 1] (int64)."""
    name, data_inputs, data_outputs = "encoder", ("pcm",), ("codes",)

    def init_state(self):
        return self.codec.init_encoder_state(self.batch_size)

    def example_data(self):
        return (torch.zeros(self.batch_size, 1, self.codec.frame_size, dtype=self.codec.dtype),)

    def _step(self, x, state):
        return self.codec.encode_step(x, state)


class DecoderGraph(_CodecGraph):
    """Mimi decoder step: codes [B, dep_q, 1] (int64) -> pcm [B, 1, frame]."""
    name, data_inputs, data_outputs = "decoder", ("codes",), ("pcm",)

    def __init__(self, codec: MimiCodec, num_codebooks: int, batch_size: int = 1):
        self.num_codebooks = num_codebooks
        super().__init__(codec, batch_size)

    def init_state(self):
        return self.codec.init_decoder_state(self.batch_size)

    def example_data(self):
        return (torch.zeros(self.batch_size, self.num_codebooks, 1, dtype=torch.long),)

    def _step(self, x, state):
        return self.codec.decode_step(x, state)


def _need_parameters(lm: LMModel) -> None:
    if getattr(lm, "weights_mode", "none") != "none":
        raise ValueError("export needs the model's own parameters (weights_mode none), "
                         f"not its {lm.weights_mode} copies")


class _DepthBase(StepGraph):
    """What both depth graphs need: moshi's depth transformer (per-step gated, no biases, RMS
    output norms), its sizes, and its layers run by the model's own code
    (:meth:`TransformerLayer.step_layer`) with a substep's weights and the frame's K/V kept in
    the graph."""

    def __init__(self, lm: LMModel, top_k: int, batch_size: int = 1):
        super().__init__()
        _need_parameters(lm)
        cfg, tf = lm.cfg, lm.depformer
        tc = tf.cfg
        if tc.bias_attn or tc.bias_ff or any(li.bias is not None for li in lm.linears):
            raise ValueError("depth graph: biases in the depth transformer are not supported")
        if tc.gating == "none" or not tc.weights_per_step:
            raise ValueError("depth graph: needs the per-step gated depth transformer (moshi's)")
        if len({g.hidden for layer in tf.layers for g in layer.gating}) != 1:
            raise ValueError("depth graph: per-step FF widths differ")
        if lm.depformer_norms is not None and any(len(list(n.parameters())) != 1 for n in lm.depformer_norms):
            raise ValueError("depth graph: only RMS depformer norms are supported")
        self.lm = lm.eval()
        self.batch_size = batch_size
        self.dep_q, self.dd = cfg.dep_q, cfg.depformer_dim
        self.top_k = _noise_width(top_k, cfg.card)
        self.use_rope, self.use_sin = tf.use_rope, tf.use_sin

    def _layers(self, x, kpos, weights, caches, bias_old, bias_new):
        """The depth layers at substep ``kpos`` [1]: x [B, 1, d] (the substep's input) -> x and
        per layer the substep's key and value [B, H, 1, Dh]. ``weights(i)``: layer i's (qkv, out,
        FF in, FF out) for this substep; ``caches(i)``: its earlier keys and values [B, H, cap, Dh],
        attended where ``bias_old`` is 0."""
        tc = self.lm.depformer.cfg
        if self.use_sin:
            x = x + tc.positional_scale * sin_embedding(kpos, self.dd, tc.max_period, x.dtype)
        rope = None
        if self.use_rope:
            cos, sin = rope_tables(kpos, tc.head_dim, tc.max_period, x.dtype)
            rope = lambda qk: apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :])  # noqa: E731
        new = []
        for i, layer in enumerate(self.lm.depformer.layers):
            kc, vc = caches(i)
            attend = lambda q, k, v: slot_attention(q, k, v, kc, vc, bias_old, bias_new)  # noqa: E731
            x, k, v = layer.step_layer(x, attend, rope=rope, weights=weights(i))
            new.append((k, v))
        return x, new


def _noise_width(top_k: int, vocab: int) -> int:
    return top_k if 0 < top_k < vocab else vocab


class TemporalGraph(StepGraph):
    """Temporal transformer step: the fed tokens [B, K] (after the delay bookkeeping, which the
    runtime does: :meth:`LMStep.delay_input`) + extra input [B, D] (face streams; zeros without
    a face) -> text token [B] (sampled with text_noise [B, k_text] at text_temp [1]) and the
    temporal output h [B, D] (after out_norm) that the depth and face graphs read."""
    name = "temporal"
    data_inputs = ("tokens", "extra", "text_noise", "text_temp")
    data_outputs = ("text", "h")

    def __init__(self, lm: LMModel, top_k_text: int, batch_size: int = 1):
        super().__init__()
        _need_parameters(lm)
        self.lm = lm.eval()
        self.batch_size = batch_size
        self.top_k = _noise_width(top_k_text, lm.cfg.text_out_card)
        table, rows = lm.packed_embeddings()
        self.register_buffer("table", table.detach().clone(), persistent=False)
        self.register_buffer("rows", rows.clone(), persistent=False)
        st = self.init_state()
        self.state_names = list(st)
        with torch.inference_mode(), slot_updates(self.lm.transformer):
            _, new = self.lm.transformer.step(torch.zeros(batch_size, 1, lm.cfg.dim), dict(st))
        self._ring_rules(st, new)

    def init_state(self):
        return self.lm.transformer.init_state(self.batch_size)

    def example_data(self):
        B, c = self.batch_size, self.lm.cfg
        return (torch.zeros(B, c.num_codebooks, dtype=torch.long), torch.zeros(B, c.dim),
                torch.ones(B, self.top_k), torch.ones(1))

    def forward(self, tokens, extra, text_noise, text_temp, *state):
        lm = self.lm
        x = LMStep.embed_input(tokens, (self.table, self.rows))
        x = x + extra.unsqueeze(1).to(x.dtype)
        with slot_updates(lm.transformer):
            h, new = lm.transformer.step(x, dict(zip(self.state_names, state)))
        h = lm.out_norm(h)
        logits = F.linear(h, lm.text_linear.weight, lm.text_linear.bias)[:, 0]
        text = graph_sample(logits, text_noise, text_temp, self.top_k)
        return self._pack((text, h[:, 0]), new)


class DepthSubstepGraph(_DepthBase):
    """One depth-transformer substep with the codebook index as an input: h [B, D], the
    previous token of the frame prev [B] (the text token for k = 0), k [1] -> audio token k [B].

    The per-codebook weights (depformer_in, input embedding, attention, gating, output head)
    are stacked along a leading axis and gathered by ``k``, so the same graph runs all dep_q
    substeps. The depth KV buffers [B, H, dep_q, Dh] get their slot k written by the runtime;
    slots < k are attended (the frame's earlier codebooks), so they never need clearing.

    This was the exported depth step up to export format 1; :class:`DepthGraph` replaced it
    (the gather copies a substep's weights every call and keeps them out of the weight-only
    quantizer's reach). It stays as the reference the unrolled graph is tested and benched
    against (``test/test_deploy.py``, ``bench/bench_duplex.py --split``)."""
    name = "depth_substep"
    data_inputs = ("h", "prev", "k", "audio_noise", "audio_temp")
    data_outputs = ("token",)

    def __init__(self, lm: LMModel, top_k: int, batch_size: int = 1):
        super().__init__(lm, top_k, batch_size)
        cfg, tf = lm.cfg, lm.depformer
        tc = tf.cfg
        ks = range(cfg.dep_q)
        sched = [tf._weight_index(k) for k in ks]
        det = lambda ts: torch.stack([t.detach() for t in ts]).clone()  # noqa: E731
        self.register_buffer("w_dep_in", det([lm.depformer_in[lm._dep_in_index(k)].weight for k in ks]),
                             persistent=False)
        embs = [lm.depformer_text_emb.weight] + [lm.depformer_emb[k - 1].weight for k in range(1, cfg.dep_q)]
        rows = torch.tensor([0] + [e.shape[0] for e in embs[:-1]]).cumsum(0)
        self.register_buffer("emb_table", torch.cat([e.detach() for e in embs]).clone(), persistent=False)
        self.register_buffer("emb_rows", rows, persistent=False)
        self.register_buffer("w_out", det([li.weight for li in lm.linears]), persistent=False)
        if lm.depformer_norms is not None:
            self.register_buffer("norm_alpha", det([next(n.parameters()).reshape(-1) for n in lm.depformer_norms]),
                                 persistent=False)
            self.norm_eps = lm.depformer_norms[0].eps
        else:
            self.norm_alpha = None
        d = self.dd
        for i, layer in enumerate(tf.layers):
            a = layer.self_attn
            self.register_buffer(f"w_qkv{i}", a.in_proj_weight.detach().view(-1, 3 * d, d)[sched].clone(),
                                 persistent=False)
            self.register_buffer(f"w_o{i}", a.out_proj.weight.detach().view(-1, d, d)[sched].clone(),
                                 persistent=False)
            self.register_buffer(f"w_gin{i}", det([layer.gating[w].linear_in.weight for w in sched]),
                                 persistent=False)
            self.register_buffer(f"w_gout{i}", det([layer.gating[w].linear_out.weight for w in sched]),
                                 persistent=False)
        self.register_buffer("_slots", torch.arange(cfg.dep_q), persistent=False)
        self.state_names = [f"layers.{i}.{kv}" for i in range(tc.num_layers) for kv in ("k", "v")]
        cap = tf.capacity
        self.slot_rules = {n: SlotRule(capacity=cap, count=1, index_input="k") for n in self.state_names}

    def init_state(self):
        st = self.lm.depformer.init_state(self.batch_size)
        return {k: st[k] for k in self.state_names}

    def example_data(self):
        B = self.batch_size
        return (torch.zeros(B, self.lm.cfg.dim), torch.zeros(B, dtype=torch.long),
                torch.zeros(1, dtype=torch.long), torch.ones(B, self.top_k), torch.ones(1))

    @staticmethod
    def _pick(w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return w.index_select(0, k)[0]

    def forward(self, h, prev, k, audio_noise, audio_temp, *state):
        x = F.linear(h, self._pick(self.w_dep_in, k))
        x = x + F.embedding(prev + self.emb_rows.index_select(0, k), self.emb_table)
        bias_old = mask_to_bias((self._slots < k).unsqueeze(0))  # [1, cap]
        bias_new = torch.zeros(1, 1, dtype=bias_old.dtype)
        x, new = self._layers(
            x.unsqueeze(1), k,
            lambda i: [self._pick(getattr(self, f"{n}{i}"), k) for n in ("w_qkv", "w_o", "w_gin", "w_gout")],
            lambda i: (state[2 * i], state[2 * i + 1]), bias_old, bias_new)
        outs = [t.to(state[2 * i].dtype) for i, kv in enumerate(new) for t in kv]
        y = x[:, 0]
        if self.norm_alpha is not None:
            y = y * torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + self.norm_eps).to(y.dtype)
            y = y * self._pick(self.norm_alpha, k)
        logits = F.linear(y, self._pick(self.w_out, k))
        token = graph_sample(logits, audio_noise, audio_temp, self.top_k)
        return (token, *outs)


class DepthGraph(_DepthBase):
    """The whole depth transformer of a frame, unrolled over the dep_q codebooks: h [B, D], the
    frame's text token text [B], audio_noise [B, dep_q, k], audio_temp [1] -> the robot's audio
    tokens [B, dep_q].

    The substeps run the model's own code: the input and the output head of
    :class:`LMModel` (``depformer_input``, ``depformer_logits``) and the layers of its depth
    transformer (:meth:`TransformerLayer.step_layer`). Every matmul has a constant weight of
    the graph (the substep's slice of the stacked attention weights is stored once per
    weight set of moshi's weights-per-step schedule), so each one is a plain MatMul that the
    weight-only quantizer (:mod:`facebot.export.quantize`) takes, and no weights are copied per
    call. The depth transformer restarts every frame, so its K/V live inside the graph: no state
    crosses the boundary. The attention is :class:`DepthSubstepGraph`'s (a dep_q-slot buffer,
    earlier slots attended, later ones masked with zeros where the substep graph has stale
    values), so tokens are the same."""
    name = "depth"
    data_inputs = ("h", "text", "audio_noise", "audio_temp")
    data_outputs = ("tokens",)

    def __init__(self, lm: LMModel, top_k: int, batch_size: int = 1):
        super().__init__(lm, top_k, batch_size)
        cfg, tf = lm.cfg, lm.depformer
        self.capacity = tf.capacity
        self.sched = [tf._weight_index(k) for k in range(cfg.dep_q)]
        d = self.dd
        for i, layer in enumerate(tf.layers):
            a = layer.self_attn
            qkv, out = a.in_proj_weight.detach().view(-1, 3 * d, d), a.out_proj.weight.detach().view(-1, d, d)
            for w in sorted(set(self.sched)):
                self.register_buffer(f"w_qkv{i}_{w}", qkv[w].clone(), persistent=False)
                self.register_buffer(f"w_o{i}_{w}", out[w].clone(), persistent=False)
        self.state_names = []

    def init_state(self):
        return {}

    def example_data(self):
        B = self.batch_size
        return (torch.zeros(B, self.lm.cfg.dim), torch.zeros(B, dtype=torch.long),
                torch.ones(B, self.dep_q, self.top_k), torch.ones(1))

    def _weights(self, i: int, w: int) -> tuple:
        """Layer i's (qkv, out, FF in, FF out) matrices of weight set w."""
        gating = self.lm.depformer.layers[i].gating[w]
        return (getattr(self, f"w_qkv{i}_{w}"), getattr(self, f"w_o{i}_{w}"), gating.linear_in.weight,
                gating.linear_out.weight)

    def forward(self, h, text, audio_noise, audio_temp):
        B, cap = h.shape[0], self.capacity
        lm = self.lm
        tc = lm.depformer.cfg
        zero = torch.zeros(B, tc.num_heads, 1, tc.head_dim, dtype=h.dtype)
        keys = [[] for _ in lm.depformer.layers]
        values = [[] for _ in lm.depformer.layers]
        bias_new = torch.zeros(1, 1, dtype=h.dtype)
        prev, tokens = text, []
        for k in range(self.dep_q):
            s = self.sched[k]
            x = lm.depformer_input(k, h.unsqueeze(1), prev.unsqueeze(1))  # [B, 1, d]
            bias_old = mask_to_bias((torch.arange(cap) < k).unsqueeze(0))  # [1, cap]
            x, new = self._layers(
                x, torch.full((1,), k, dtype=torch.long), lambda i: self._weights(i, s),
                lambda i: (torch.cat(keys[i] + [zero] * (cap - k), dim=2),
                           torch.cat(values[i] + [zero] * (cap - k), dim=2)), bias_old, bias_new)
            for i, (kk, v) in enumerate(new):
                keys[i].append(kk)
                values[i].append(v)
            logits = lm.depformer_logits(k, x[:, 0])
            prev = graph_sample(logits, audio_noise[:, k], audio_temp, self.top_k)
            tokens.append(prev)
        return (torch.stack(tokens, dim=1),)


class FaceEmbedGraph(StepGraph):
    """Face input streams: the robot's face tokens of the previous frame and the user's of
    this frame [B, N] (id K = none yet) -> the extra input of the temporal graph [B, D]."""
    name = "face_embed"
    data_inputs = ("robot_prev", "user")
    data_outputs = ("extra",)

    def __init__(self, face_lm: FaceLM, batch_size: int = 1):
        super().__init__()
        self.face_lm = face_lm.eval()
        self.batch_size = batch_size

    def init_state(self):
        return {}

    def example_data(self):
        c = self.face_lm.cfg
        t = torch.full((self.batch_size, c.num_tokens), c.initial_token, dtype=torch.long)
        return (t, t.clone())

    def forward(self, robot_prev, user):
        return (self.face_lm.stream_embedding(robot_prev, user),)


class FaceHeadGraph(StepGraph):
    """Face Transformer + face codec decoder step: h [B, D], this frame's generated tokens
    gen [B, 1 + dep_q], the previous robot face tokens prev [B, N] -> face tokens [B, N]
    (sampled with face_noise [B, N, k] at face_temp [1]) and two FLAME core frames [B, 2, 56]."""
    name = "face_head"
    data_inputs = ("h", "gen", "prev", "face_noise", "face_temp")
    data_outputs = ("face_tokens", "face")

    def __init__(self, lm: LMModel, face_lm: FaceLM, codec: FaceCodec, top_k: int = 0,
                 batch_size: int = 1):
        super().__init__()
        self.face_lm, self.codec = face_lm.eval(), codec.eval()
        self.batch_size = batch_size
        self.dep_q = lm.cfg.dep_q
        self.top_k = _noise_width(top_k, face_lm.cfg.codebook_size)
        self.meta = {"face_initial": int(face_lm.cfg.initial_token)}
        # the LM's input tables of the streams generated here (text + the robot's codebooks),
        # not the user's codebooks: this graph keeps its own copy of what it reads
        embs = [lm.text_emb.weight] + [lm.emb[k].weight for k in range(lm.cfg.dep_q)]
        rows = torch.tensor([0] + [e.shape[0] for e in embs[:-1]]).cumsum(0)
        self.register_buffer("table", torch.cat([e.detach() for e in embs]).clone(), persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        st = self.init_state()
        self.state_names = list(st)
        tok = torch.zeros(batch_size, face_lm.cfg.num_tokens, 1, dtype=torch.long)
        with torch.inference_mode(), slot_updates(self.codec):
            _, new = self.codec.decode_step(tok, dict(st))
        self._ring_rules(st, new)

    def init_state(self):
        return self.codec.init_decoder_state(self.batch_size)

    def example_data(self):
        B, c = self.batch_size, self.face_lm.cfg
        prev = torch.full((B, c.num_tokens), c.initial_token, dtype=torch.long)
        return (torch.zeros(B, c.dim_in), torch.zeros(B, self.dep_q + 1, dtype=torch.long), prev,
                torch.ones(B, c.num_tokens, self.top_k), torch.ones(1))

    def forward(self, h, gen, prev, face_noise, face_temp, *state):
        e_gen = F.embedding(gen + self.rows, self.table).sum(1)
        ft = self.face_lm.face_transformer
        e_all = (h + e_gen.to(h.dtype)).to(ft.in_proj.weight.dtype)
        logits = ft(e_all, prev if ft.cfg.use_prev_tokens else None)
        tokens = graph_sample(logits, face_noise, face_temp, self.top_k)
        with slot_updates(self.codec):
            face, new = self.codec.decode_step(tokens.unsqueeze(-1), dict(zip(self.state_names, state)))
        return self._pack((tokens, face), new)


def build_graphs(codec: MimiCodec, lm: LMModel, top_k_text: int, top_k: int,
                 face_lm: Optional[FaceLM] = None, face_codec: Optional[FaceCodec] = None,
                 face_top_k: int = 0, batch_size: int = 1) -> Dict[str, StepGraph]:
    """All graphs of one model, by name (the face graphs only with a face model)."""
    graphs: Dict[str, StepGraph] = {
        "encoder": EncoderGraph(codec, batch_size),
        "temporal": TemporalGraph(lm, top_k_text, batch_size),
        "depth": DepthGraph(lm, top_k, batch_size),
        "decoder": DecoderGraph(codec, lm.cfg.dep_q, batch_size),
    }
    if face_lm is not None and face_codec is not None:
        graphs["face_embed"] = FaceEmbedGraph(face_lm, batch_size)
        graphs["face_head"] = FaceHeadGraph(lm, face_lm, face_codec, face_top_k, batch_size)
    return graphs
