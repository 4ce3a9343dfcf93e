"""Streaming transformer with explicit, static-shape state (designed for export).

One implementation serves the Moshi temporal transformer, the depth transformer ("depformer",
weights per step) and the Mimi codec's encoder/decoder transformers. Its parts: the
configuration (facebot.model.transformer_config), the layers (facebot.model.transformer_layers,
attention weights in facebot.model.attention), positions (facebot.model.positional) and the
streaming state with its KV writes (facebot.model.kv_cache, which also says what the model sees
after the ring buffers wrap around).

Streaming
---------
``init_state(B)`` gives the state; ``step(x, state)`` writes the K/V of the ``T`` new positions
into their ring-buffer slots in place and returns ``(y, new_state)`` whose ``offset`` is
``offset + T`` (the torch runtime); ``step_slots(x, state)`` leaves the buffers alone and returns
the new slots instead (the form exported graphs take). Both equal a non-streaming pass with the
same sliding-window causal mask (``forward``; tests).

RoPE is applied to keys when they are written, with their absolute position, and to queries
with theirs, so the attention logits depend on the true relative distance ``q - k``
(0 .. capacity-1) whatever the absolute position: hour 3 looks exactly like minute 1 to the
model, with the oldest frames forgotten. Each layer attends directly to the last ``context``
positions; through the lower layers' cached K/V (computed when those positions were current)
information reaches back up to ``num_layers * context`` positions, exactly as in a
non-streaming pass. Absolute angles are computed in float64 from the int64 counter (moshi uses
float32, whose angle error grows with the position: ~1e-2 rad at 10^5 positions, i.e. after
~2 h at 12.5 Hz).

Weights per step (depformer)
----------------------------
With ``weights_per_step = N`` the layer holds N sets of attention and FF weights; ``step`` takes
``step_index`` (a Python int, so the depth loop unrolls into a static graph) and the positions are
``step_index + t`` (the depformer restarts every frame); slots ``[0, step_index + T)`` are
attended, so no reset of the state is ever needed between frames.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.model.kv_cache import FrameWrites, RingWrites, SlotOutputs, State, init_state, kv_names
from facebot.model.positional import Rope, rope_angles, rope_angles_f32, sin_embedding
from facebot.model.prepared_weights import linear
from facebot.model.transformer_config import TransformerConfig
from facebot.model.transformer_layers import TransformerLayer

KVWrites = Union[RingWrites, FrameWrites, SlotOutputs]


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

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        p = self.layers[0].self_attn.in_proj_weight
        c = self.cfg
        return init_state(c.num_layers, batch_size, c.num_heads, self.capacity, c.head_dim,
                          p.device if device is None else device, p.dtype if dtype is None else dtype)

    def _weight_index(self, step_index: int) -> int:
        s = self.cfg.weights_per_step_schedule
        return s[step_index] if s is not None else step_index

    def _rope(self, pos: torch.Tensor, dtype: torch.dtype, exported: bool = False) -> Optional[Rope]:
        if not self.use_rope:
            return None
        c = self.cfg
        if exported:  # no complex numbers, no float64
            return Rope(rope_angles_f32(pos, c.head_dim, c.max_period), dtype, real=True)
        return Rope(rope_angles(pos, c.head_dim, c.max_period), dtype)

    # ---- streaming --------------------------------------------------------------------------
    def step(self, x: torch.Tensor, state: State,
             step_index: Optional[int] = None) -> Tuple[torch.Tensor, State]:
        """x [B, T, D] for T new positions -> (y [B, T, D], new state).

        The KV buffers of ``state`` are updated in place (only the T new slots); the returned dict
        holds them and a new ``offset``. With weights_per_step, ``step_index`` (int) selects the
        weights and is the position (the depformer restarts each frame).
        """
        c = self.cfg
        self._check_causal()
        T = x.shape[1]
        offset = state["offset"]
        if not c.weights_per_step:
            pos_q = self._positions(offset, T, x.device)
            writes = RingWrites(offset, pos_q, self._slots, self.capacity, c.context)
            x, rope = self._encode_positions(x, pos_q)
            return self._layers(x, state, writes, 0, rope), {**state, "offset": offset + T}
        if step_index is None:
            raise ValueError("weights_per_step: step() needs step_index")
        if T != 1:
            raise ValueError("weights_per_step: feed one position per step")
        if step_index + T > self.capacity or step_index + T > c.weights_per_step:
            raise ValueError(f"step_index {step_index} + T {T} exceeds {c.weights_per_step} steps")
        pos_q = (torch.full((T,), step_index, device=x.device, dtype=torch.long)
                 if self.use_rope or self.use_sin else None)
        x, rope = self._encode_positions(x, pos_q)
        y = self._layers(x, state, FrameWrites(step_index, step_index + T), self._weight_index(step_index), rope)
        return y, {**state, "offset": torch.full_like(offset, step_index + T)}

    def step_slots(self, x: torch.Tensor, state: State) -> Tuple[torch.Tensor, State]:
        """Like ``step`` but the KV buffers are left alone: the new state holds, under each
        buffer's name, the T new slots [B, H, T, Dh] for the caller to write at
        ``(offset + t) % capacity`` (exported graphs; facebot.model.kv_cache). RoPE angles are
        float32 and real (no complex numbers, no float64 in a graph)."""
        c = self.cfg
        self._check_causal()
        if c.weights_per_step:
            raise ValueError("slot updates: the per-step depth transformer is exported by "
                             "facebot.export.graphs.DepthGraph")
        T = x.shape[1]
        offset = state["offset"]
        pos_q = self._positions(offset, T, x.device)
        x, rope = self._encode_positions(x, pos_q, exported=True)
        writes = SlotOutputs(offset, pos_q, self._slots, self.capacity, c.context)
        y = self._layers(x, state, writes, 0, rope)
        return y, {**state, **writes.updates, "offset": offset + T}

    def _check_causal(self) -> None:
        if not self.cfg.causal:
            raise ValueError("streaming needs a causal transformer")

    @staticmethod
    def _positions(offset: torch.Tensor, T: int, device) -> torch.Tensor:
        return offset if T == 1 else offset + torch.arange(T, device=device, dtype=torch.long)

    def _encode_positions(self, x: torch.Tensor, pos_q: Optional[torch.Tensor],
                          exported: bool = False) -> Tuple[torch.Tensor, Optional[Rope]]:
        """x with the sinusoidal embedding of ``pos_q`` added (when used), and their RoPE."""
        c = self.cfg
        if self.use_sin:
            x = x + c.positional_scale * sin_embedding(pos_q, x.shape[2], c.max_period, x.dtype)
        return x, self._rope(pos_q, x.dtype, exported)

    def _layers(self, x: torch.Tensor, state: State, writes: KVWrites, wi: int,
                rope: Optional[Rope]) -> torch.Tensor:
        """The layers on the new positions, with weight set ``wi``."""
        for i, layer in enumerate(self.layers):
            kn, vn = kv_names(i)
            x, _, _ = layer.step_layer(x, writes.attention(i, state[kn], state[vn]), wi, rope)
        return x

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

