"""The user's face stream of a Moshi-Face model: FLAME frames -> the face codec's N tokens.

One rule, used by training and at run time so the model sees the same thing in both: each
80 ms step has two 25 fps user frames; when both show a face, the causal face codec encodes
them to N tokens; otherwise the step gets the no-face token (token id K = "no token", the
FaceLM's ``initial_token``), and the encoder is fed the neutral face (zeros) for the missing
frames, so its streaming state stays continuous.

* :class:`UserFaceEncoder` streams it (the torch step and the exported graphs both take its
  tokens; the encoder is small and runs in torch on either runtime).
* :func:`user_face_tokens` does the same over a whole track (training), and gives exactly the
  streaming tokens (the codec is causal; tested).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..model.face_codec import FaceCodec

__all__ = ["UserFaceEncoder", "user_face_tokens", "frames_to_core"]


def frames_to_core(frames) -> tuple[np.ndarray, bool]:
    """Two FlameFrames (either may be None) -> (``[2, 56]`` float32 with zeros for the missing
    ones, whether both are there)."""
    core = np.zeros((2, 56), np.float32)
    if frames is None or len(frames) != 2:
        return core, False
    for j, f in enumerate(frames):
        if f is not None:
            core[j] = f.to_core()
    ok = all(f is not None for f in frames) and bool(np.isfinite(core).all())
    return np.nan_to_num(core, nan=0.0, posinf=0.0, neginf=0.0), ok


class UserFaceEncoder:
    def __init__(self, codec: FaceCodec, no_face_token: int) -> None:
        if not codec.cfg.causal:
            raise ValueError("the user face stream needs the causal (streaming) face codec")
        if codec.cfg.downsample != 2:
            raise ValueError(f"the user face stream expects 2 frames per step, codec has {codec.cfg.downsample}")
        self.codec = codec.eval()
        self.no_face_token = int(no_face_token)
        self.n = codec.cfg.num_tokens
        self.reset()

    def reset(self) -> None:
        self.state = self.codec.init_encoder_state(1)
        self.steps_with_face = 0
        self.steps_without_face = 0

    @torch.inference_mode()
    def step(self, frames) -> torch.Tensor:
        """``[1, N]`` int64: the user's tokens for this step, or the no-face token."""
        core, with_face = frames_to_core(frames)
        tokens, self.state = self.codec.encode_step(torch.from_numpy(core)[None], self.state)
        if not with_face:
            self.steps_without_face += 1
            return torch.full((1, self.n), self.no_face_token, dtype=torch.long)
        self.steps_with_face += 1
        return tokens[..., 0].long()


@torch.no_grad()
def user_face_tokens(codec: FaceCodec, face: np.ndarray, present: Optional[Sequence[bool]] = None,
                     no_face_token: Optional[int] = None) -> torch.Tensor:
    """``face [T, 56]`` (25 fps) and ``present [T]`` -> tokens ``[N, T // 2]``: the rule of the
    module docstring over a whole track. ``no_face_token`` defaults to the codebook size K."""
    face = np.asarray(face, np.float32)
    t2 = face.shape[0] // 2 * 2
    face = face[:t2].copy()
    present = np.ones(t2, bool) if present is None else np.asarray(present, bool)[:t2]
    face[~present] = 0.0
    tokens = codec.encode(torch.from_numpy(face)[None])[0]  # [N, T // 2]
    steps_with_face = present.reshape(-1, 2).all(axis=1)
    k = codec.cfg.codebook_size if no_face_token is None else int(no_face_token)
    tokens[:, ~torch.from_numpy(steps_with_face)] = k
    return tokens.long()
