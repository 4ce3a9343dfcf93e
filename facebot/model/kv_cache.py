"""Streaming state of a transformer: KV ring buffers and the position counter, and the three
ways a step writes its new keys and values.

State
-----
``init_state`` returns a flat, ordered ``dict[str, Tensor]``::

    layers.{i}.k, layers.{i}.v   [B, H, capacity, Dh]   KV ring buffers (fixed capacity)
    offset                       [1] int64              absolute position of the next input

A step writes the K/V of its ``T`` new positions into slots ``(offset + t) % capacity`` (only
those slots) and attends with a mask computed from the counter alone. Nothing else is hidden
in the module: two states can be stepped independently with the same module.

What the model sees after wrap-around
-------------------------------------
Slot ``s`` holds position ``last - ((last - s) mod capacity)`` (``last`` = newest position
written), so after wrap-around the buffer is a sliding window over the last ``capacity``
positions. A key is visible when ``0 <= q - k < context``. The counter must start at 0 with
zeroed buffers (``init_state``): slots are valid by arithmetic on the counter, not by a written
flag.

This is the same window as moshi's ``RingKVCache`` (capacity = context): in particular, when
``T > 1`` positions are fed at once after wrap-around, the first of them sees ``T - 1`` fewer
keys than in a non-streaming pass, because the newest keys have already overwritten them (moshi
behaves the same). Set ``kv_capacity = context + T - 1`` to make streaming equal to
``forward`` exactly in that case too.

The writes
----------
- :class:`RingWrites` (torch runtime): the new K/V go into the ring buffers in place, then the
  queries attend over the whole buffer under the mask.
- :class:`FrameWrites` (depth transformer): slots ``[start, start + T)`` of a buffer that
  restarts every frame, attended as the static slice ``[0, start + T)``: no mask, no reset.
- :class:`SlotOutputs` (exported graphs): the buffers are left alone; the attention reads them
  where they lie plus the new keys (``slot_attention``), and the new slots come back under the
  buffers' names ([B, H, T, Dh]) for the runtime to write: an exported step that returned the
  whole updated cache would copy every cache every frame.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from facebot.model.attention import mask_to_bias, slot_attention

State = Dict[str, torch.Tensor]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def kv_names(layer: int) -> tuple[str, str]:
    """State names of a layer's key and value buffers."""
    return f"layers.{layer}.k", f"layers.{layer}.v"


def init_state(num_layers: int, batch_size: int, num_heads: int, capacity: int, head_dim: int,
               device, dtype) -> State:
    """Zeroed KV buffers for every layer and the counter at 0."""
    shape = (batch_size, num_heads, capacity, head_dim)
    state: State = {}
    for i in range(num_layers):
        k, v = kv_names(i)
        state[k] = torch.zeros(shape, device=device, dtype=dtype)
        state[v] = torch.zeros(shape, device=device, dtype=dtype)
    state["offset"] = torch.zeros(1, device=device, dtype=torch.long)
    return state


def ring_positions(last: torch.Tensor, slots: torch.Tensor, capacity: int) -> torch.Tensor:
    """The absolute position each slot holds when ``last`` is the newest position written."""
    return last - torch.remainder(last - slots, capacity)


class RingWrites:
    """In place into the ring buffers, then attention over the whole buffer under the mask."""

    def __init__(self, offset: torch.Tensor, pos_q: torch.Tensor, slots: torch.Tensor, capacity: int,
                 context: Optional[int]):
        T = pos_q.shape[0]
        last = offset + (T - 1) if T > 1 else offset
        pos_k = ring_positions(last, slots, capacity)
        delta = pos_q[:, None] - pos_k[None, :]
        mask = (pos_k >= 0) & (delta >= 0)
        if context is not None:
            mask = mask & (delta < context)
        self.mask = mask
        self.write = torch.remainder(pos_q, capacity)
        self.updates: State = {}

    def attention(self, layer: int, kc: torch.Tensor, vc: torch.Tensor) -> Attend:
        def attend(q, k, v):
            kc.index_copy_(2, self.write, k if k.dtype == kc.dtype else k.to(kc.dtype))
            vc.index_copy_(2, self.write, v if v.dtype == vc.dtype else v.to(vc.dtype))
            return F.scaled_dot_product_attention(q, kc, vc, attn_mask=self.mask)
        return attend


class FrameWrites:
    """In place into slots ``[start, end)`` of a per-frame buffer, attending ``[0, end)``."""

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end
        self.updates: State = {}

    def attention(self, layer: int, kc: torch.Tensor, vc: torch.Tensor) -> Attend:
        def attend(q, k, v):
            kc[:, :, self.start:self.end] = k
            vc[:, :, self.start:self.end] = v
            return F.scaled_dot_product_attention(q, kc[:, :, :self.end], vc[:, :, :self.end])
        return attend


class SlotOutputs:
    """Buffers left alone; ``updates`` collects each layer's new slots under the buffers' names."""

    def __init__(self, offset: torch.Tensor, pos_q: torch.Tensor, slots: torch.Tensor, capacity: int,
                 context: Optional[int]):
        self.bias_old, self.bias_new = self._biases(offset, pos_q, slots, capacity, context)
        self.updates: State = {}

    @staticmethod
    def _biases(offset, pos_q, slots, capacity, context):
        """Additive attention biases: [T, capacity] over the buffers as they are (the slots this
        call overwrites and positions out of context hidden) and [T, T] over the new keys
        (causal within context). Together they select exactly the keys that the in-place step
        attends to after its write."""
        T = pos_q.shape[0]
        last = offset - 1  # newest position already in the buffers
        pos_old = ring_positions(last, slots, capacity)
        overwritten = torch.remainder(slots - offset, capacity) < T
        d_old = pos_q[:, None] - pos_old[None, :]
        m_old = (pos_old >= 0)[None, :] & ~overwritten[None, :]
        d_new = pos_q[:, None] - pos_q[None, :]
        m_new = d_new >= 0
        if context is not None:
            m_old = m_old & (d_old < context)
            m_new = m_new & (d_new < context)
        return mask_to_bias(m_old), mask_to_bias(m_new)

    def attention(self, layer: int, kc: torch.Tensor, vc: torch.Tensor) -> Attend:
        def attend(q, k, v):
            o = slot_attention(q, k, v, kc, vc, self.bias_old, self.bias_new)
            names = kv_names(layer)
            self.updates[names[0]], self.updates[names[1]] = k.to(kc.dtype), v.to(vc.dtype)
            return o
        return attend
