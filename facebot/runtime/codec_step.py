"""Mimi's streaming steps as modules with positional tensor inputs and outputs, for export.

``CodecEncoderStep(codec)(pcm, *state) -> (codes, *new_state)`` and
``CodecDecoderStep(codec)(codes, *state) -> (pcm, *new_state)``: the state tensors are passed in
the order of ``.state_names`` (the keys of ``codec.init_encoder_state`` /
``init_decoder_state``), all with static shapes, so the graph has a fixed signature for
torch.export / ONNX / TensorRT. ``.init_state(batch)`` gives the initial tensors in that order;
``.example_inputs(batch)`` a full argument tuple.

The transformers write the new KV slots into the given buffers in place (and return them); an
exported graph sees that as an input that is also an output (bind the same buffer to both).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn

from ..model.codec import MimiCodec

__all__ = ["CodecEncoderStep", "CodecDecoderStep"]


class _Step(nn.Module):
    """One direction of the codec as ``(input, *state) -> (output, *new_state)``; subclasses
    name their state through ``_init`` (the codec's init_encoder_state / init_decoder_state)."""

    def __init__(self, codec: MimiCodec, batch_size: int = 1):
        super().__init__()
        self.codec = codec
        self.batch_size = batch_size
        self.state_names: List[str] = list(self._init(batch_size, "meta"))

    def init_state(self, batch_size: int | None = None) -> Tuple[torch.Tensor, ...]:
        st = self._init(self.batch_size if batch_size is None else batch_size)
        return tuple(st[k] for k in self.state_names)


class CodecEncoderStep(_Step):
    """``(pcm [B, 1, frame_size], *state) -> (codes [B, K, 1] int64, *new_state)``."""

    def _init(self, batch_size: int, device=None):
        return self.codec.init_encoder_state(batch_size, device=device)

    def forward(self, pcm: torch.Tensor, *state: torch.Tensor):
        codes, new = self.codec.encode_step(pcm, dict(zip(self.state_names, state)))
        return (codes, *[new[k] for k in self.state_names])

    def example_inputs(self, batch_size: int | None = None):
        b = self.batch_size if batch_size is None else batch_size
        pcm = torch.zeros(b, 1, self.codec.frame_size, device=self.codec.device,
                          dtype=self.codec.dtype)
        return (pcm, *self.init_state(b))


class CodecDecoderStep(_Step):
    """``(codes [B, K, 1] int64, *state) -> (pcm [B, 1, frame_size], *new_state)``."""

    def _init(self, batch_size: int, device=None):
        return self.codec.init_decoder_state(batch_size, device=device)

    def forward(self, codes: torch.Tensor, *state: torch.Tensor):
        pcm, new = self.codec.decode_step(codes, dict(zip(self.state_names, state)))
        return (pcm, *[new[k] for k in self.state_names])

    def example_inputs(self, batch_size: int | None = None):
        b = self.batch_size if batch_size is None else batch_size
        codes = torch.zeros(b, self.codec.num_codebooks, 1, dtype=torch.long,
                            device=self.codec.device)
        return (codes, *self.init_state(b))
