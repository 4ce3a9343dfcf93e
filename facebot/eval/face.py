"""Face-side metrics: does the jaw move with the voice as heard, and is the FLAME stream regular.

Lip-sync offset is the lag that best lines up the jaw with the robot's voice envelope
(normalised cross-correlation of 10 ms RMS against the jaw value held over the same 10 ms, as a
display or a position controller holds it; searched within +-``max_lag_s``); positive means the
jaw moves after the voice. It is measured for the jaw as shown (FLAME jaw_pose[0]
at its show stamp) and for the actuator command at the time it is meant to be reached.
"""
from __future__ import annotations

import numpy as np

from facebot.eval.inputs import RATE, Conversation, JawTrack

HOP_S = 0.01
FRAME_PERIOD_S = 0.04  # 25 fps


def voice_envelope(audio: np.ndarray) -> np.ndarray:
    hop = int(RATE * HOP_S)
    n = audio.shape[0] // hop
    return np.sqrt(np.mean(np.asarray(audio[: n * hop], np.float64).reshape(n, hop) ** 2, axis=1))


def _held(track: JawTrack, t: np.ndarray) -> np.ndarray:
    """The track as a display or a position controller plays it: each value holds until the
    next one (NaN before the first and after the last + one period)."""
    order = np.argsort(track.t_s)
    ts, vs = track.t_s[order], track.value[order]
    idx = np.searchsorted(ts, t, side="right") - 1
    out = np.where(idx >= 0, vs[np.clip(idx, 0, None)], np.nan)
    period = np.median(np.diff(ts)) if ts.size > 1 else 0.0
    out[t >= ts[-1] + period] = np.nan
    return out


def lip_sync_lag(audio: np.ndarray, jaw: JawTrack, max_lag_s: float = 0.3) -> dict:
    """{'lag_ms', 'r'} of the jaw against the voice envelope; None values when either is flat."""
    env = voice_envelope(audio)
    j = _held(jaw, np.arange(env.shape[0]) * HOP_S)  # value on screen / commanded during each 10 ms
    ok = np.isfinite(j)
    if ok.sum() < 10 or env[ok].std() == 0 or j[ok].std() == 0:
        return {"lag_ms": None, "r": None}
    e = np.where(ok, (env - env[ok].mean()) / env[ok].std(), 0.0)
    jz = np.where(ok, (j - j[ok].mean()) / j[ok].std(), 0.0)
    n = e.shape[0]
    k_max = int(round(max_lag_s / HOP_S))
    best = (-np.inf, 0)
    for k in range(-k_max, k_max + 1):  # jaw[i + k] against voice[i]
        a, b = e[max(0, -k):n - max(0, k)], jz[max(0, k):n - max(0, -k)]
        r = float(np.mean(a * b)) if a.size else -np.inf
        if r > best[0]:
            best = (r, k)
    return {"lag_ms": best[1] * HOP_S * 1000.0, "r": best[0]}


def flame_stream(t_s: np.ndarray, sequence: np.ndarray | None) -> dict:
    """Frame rate, stamp jitter (std and worst deviation of the frame step) and missing frames."""
    if t_s is None or t_s.shape[0] < 2:
        return {"frames": 0 if t_s is None else int(t_s.shape[0]), "fps": None, "jitter_ms": None,
                "max_step_error_ms": None, "missing": None}
    steps = np.diff(np.sort(t_s))
    missing = None
    if sequence is not None and sequence.shape[0] == t_s.shape[0]:
        gaps = np.diff(np.sort(sequence))
        missing = int(np.clip(gaps - 1, 0, None).sum())
    return {"frames": int(t_s.shape[0]), "fps": float(steps.size / (t_s.max() - t_s.min())),
            "jitter_ms": float(steps.std() * 1000.0),
            "max_step_error_ms": float(np.abs(steps - FRAME_PERIOD_S).max() * 1000.0), "missing": missing}


def face_metrics(conv: Conversation) -> dict:
    out = {"lip_sync_shown": None, "lip_sync_command": None,
           "flame": flame_stream(conv.flame_t_s, conv.flame_sequence), "frames_refused": None}
    if conv.jaw_shown is not None:
        out["lip_sync_shown"] = lip_sync_lag(conv.robot, conv.jaw_shown)
    if conv.jaw_command is not None:
        out["lip_sync_command"] = lip_sync_lag(conv.robot, conv.jaw_command)
    if conv.head_counters is not None:
        out["frames_refused"] = int(conv.head_counters.get("frames_refused", 0))
        out["refused_by_reason"] = {k: v for k, v in conv.head_counters.items() if k.startswith("refused_") and v}
    return out
