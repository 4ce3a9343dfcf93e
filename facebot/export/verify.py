"""Check an export: stream the same frames through the exported graphs and through the
model's own torch step, and report how far apart they are.

The torch side is the torch runtime as the model backend runs it (codec steps, :class:`LMStep`
or :class:`FaceLMStep` with in-place KV writes and SDPA); the graph side is
:class:`GraphDuplexStep` over onnxruntime sessions. Both draw the sampling noise from the same
seed in the same order, so sampled tokens are compared too, not only greedy ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..model.sampling import make_generator
from ..runtime.graph_loop import GraphDuplexStep, GraphStepResult

__all__ = ["torch_reference_steps", "graph_steps", "compare_runtimes", "speechlike_signal"]


def speechlike_signal(frames: int, frame_size: int = 1920, seed: int = 0) -> List[np.ndarray]:
    """Speech-like input: noise bursts under a syllable-rate envelope (a codec sees varied codes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * frame_size) / 24000.0
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) * (rng.random() * 0.5 + 0.5)
    x = (0.1 * env * rng.standard_normal(t.size)).astype(np.float32)
    return [x[i * frame_size:(i + 1) * frame_size] for i in range(frames)]


@torch.inference_mode()
def torch_reference_steps(codec, stepper, pcms: List[np.ndarray], seed: int,
                          face_stepper=None) -> List[GraphStepResult]:
    """The torch runtime's frames (as ModelBackend.step computes them)."""
    enc, dec = codec.init_encoder_state(1), codec.init_decoder_state(1)
    step = face_stepper or stepper
    state = step.init_state(1)
    gen = make_generator(seed)
    out = []
    for pcm in pcms:
        codes, enc = codec.encode_step(torch.from_numpy(pcm).view(1, 1, -1), enc)
        noise = step.draw_noise(1, gen)
        face = None
        if face_stepper is not None:
            tokens, valid, _, f, state = face_stepper.step(codes[:, :, 0], None, state, noise)
            face = f[0].float().numpy().copy()
        else:
            tokens, valid, state = stepper.step(codes[:, :, 0], state, None, noise)
        audio = None
        if bool(valid):
            a, dec = codec.decode_step(tokens[:, 1:].unsqueeze(-1), dec)
            audio = a.reshape(-1).numpy().copy()
        out.append(GraphStepResult(audio=audio, tokens=tokens[0].numpy().copy(), valid=bool(valid), face=face))
    return out


def graph_steps(loop: GraphDuplexStep, pcms: List[np.ndarray], seed: int) -> List[GraphStepResult]:
    loop.reset(seed)
    out = []
    for pcm in pcms:
        r = loop.step(pcm)
        out.append(GraphStepResult(audio=None if r.audio is None else r.audio.copy(), tokens=r.tokens.copy(),
                              valid=r.valid, face=None if r.face is None else r.face.copy()))
    return out


def differences(a: List[GraphStepResult], b: List[GraphStepResult]) -> dict:
    """Token mismatches and the largest audio / FLAME differences between two runs."""
    token_mismatch = sum(int(not np.array_equal(x.tokens, y.tokens)) for x, y in zip(a, b))
    audio = max([float(np.abs(x.audio - y.audio).max()) for x, y in zip(a, b)
                 if x.audio is not None and y.audio is not None] or [0.0])
    valid_mismatch = sum(int(x.valid != y.valid) for x, y in zip(a, b))
    face = max([float(np.abs(x.face - y.face).max()) for x, y in zip(a, b)
                if x.face is not None and y.face is not None] or [0.0])
    return {"frames": len(a), "token_frames_differing": token_mismatch,
            "valid_differing": valid_mismatch, "audio_max_abs": audio, "face_max_abs": face}


def compare_runtimes(folder: Path, manifest: dict, backend, frames: int = 50, seed: int = 0,
                     threads: Optional[int] = None) -> dict:
    """onnxruntime (this export) against the torch runtime of ``backend`` (a ModelBackend)."""
    from ..runtime.model_runtime import load_ort_runners

    pcms = speechlike_signal(frames, backend.codec.frame_size, seed)
    fs = backend.face_stepper
    ref = torch_reference_steps(backend.codec, backend.stepper, pcms, seed, fs)
    loop = GraphDuplexStep(load_ort_runners(folder, manifest, "cpu", threads), backend.lm.cfg,
                           backend.stepper.sampling, face_temp=fs.face_temp if fs else 0.0)
    d = differences(ref, graph_steps(loop, pcms, seed))
    lines = [f"onnxruntime vs torch over {frames} frames: tokens differ in {d['token_frames_differing']} "
             f"frames, audio max |diff| {d['audio_max_abs']:.2e}"
             + (f", FLAME max |diff| {d['face_max_abs']:.2e}" if fs else "")]
    return {**d, "lines": lines}
