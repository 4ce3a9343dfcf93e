"""The face codec's streaming steps as modules with positional tensors in and out, for export.

``FaceEncoderStep(codec)(face2, *state) -> (tokens, *new_state)``: ``face2 [B, 2, 56]`` (two
25 fps FLAME frames, one 80 ms step) to ``tokens [B, N, 1]`` (int64).
``FaceDecoderStep(codec)(tokens, *state) -> (face2, *new_state)``: the reverse.

The state tensors travel in the order of ``.state_names`` (the keys of the codec's
``init_encoder_state`` / ``init_decoder_state``), all with static shapes, so the graph has one
fixed signature (torch.export / ONNX / TensorRT). The KV ring buffers are written in place and
also returned: bind the same buffer to the input and the output. Only the causal codec streams.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn

from ..model.face_codec import FaceCodec

__all__ = ["FaceEncoderStep", "FaceDecoderStep"]


class _FaceStep(nn.Module):
    """One direction of the face codec as ``(input, *state) -> (output, *new_state)``;
    subclasses name their state through ``_init`` (init_encoder_state / init_decoder_state)."""

    def __init__(self, codec: FaceCodec, batch_size: int = 1):
        super().__init__()
        if not codec.cfg.causal:
            raise ValueError("only the causal face codec has a streaming step")
        self.codec = codec
        self.batch_size = batch_size
        self.state_names: List[str] = list(self._init(batch_size))

    def init_state(self, batch_size: int | None = None) -> Tuple[torch.Tensor, ...]:
        st = self._init(self.batch_size if batch_size is None else batch_size)
        return tuple(st[k] for k in self.state_names)

    def _run(self, fn, x: torch.Tensor, state):
        y, new = fn(x, dict(zip(self.state_names, state)))
        return (y, *[new[k] for k in self.state_names])


class FaceEncoderStep(_FaceStep):
    """``(face2 [B, r, 56], *state) -> (tokens [B, N, 1], *new_state)``."""

    def _init(self, batch_size: int):
        return self.codec.init_encoder_state(batch_size)

    def forward(self, face2: torch.Tensor, *state: torch.Tensor):
        return self._run(self.codec.encode_step, face2, state)

    def example_inputs(self, batch_size: int | None = None):
        b = self.batch_size if batch_size is None else batch_size
        c = self.codec.cfg
        return (torch.zeros(b, c.downsample, c.input_dim), *self.init_state(b))


class FaceDecoderStep(_FaceStep):
    """``(tokens [B, N, 1], *state) -> (face2 [B, r, 56], *new_state)``."""

    def _init(self, batch_size: int):
        return self.codec.init_decoder_state(batch_size)

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        return self._run(self.codec.decode_step, tokens, state)

    def example_inputs(self, batch_size: int | None = None):
        b = self.batch_size if batch_size is None else batch_size
        return (torch.zeros(b, self.codec.cfg.num_tokens, 1, dtype=torch.long), *self.init_state(b))
