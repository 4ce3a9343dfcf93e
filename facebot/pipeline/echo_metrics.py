"""What the echo canceller achieved in a simulated room, where the parts of the microphone
signal are known: the echo and the user's speech are kept apart by ``EchoRoom``.

- **ERLE** (echo return loss enhancement) while only the robot talks: echo power at the
  microphone over the power left after the canceller, on 10 ms blocks where the echo is
  present and the user is silent, from 1 s after the robot's first word on. ``converged_s`` is
  how long after the first word the ERLE of a 250 ms window first reaches the target.
- **False barge-ins**: barge-ins decided while the user had said nothing for 0.5 s, per minute
  of robot speech.
- **Double talk**: for each user speech onset while the robot was talking, the time from the
  onset to the VAD's barge-in decision (on the input timeline), or a miss.
- **Echo leak**: the highest speech probability the VAD gave an 80 ms frame of robot-only
  audio that the canceller was cleaning (``echo_suppressed``, the user silent for 0.5 s
  around it), after convergence: how far what AEC3 lets through stays below the VAD's echo
  threshold (``LoopConfig.vad_echo_threshold``), the margin against false barge-ins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facebot.audio.framing import MODEL_RATE

BLOCK = MODEL_RATE // 100  # 10 ms
ERLE_TARGET_DB = 25.0


@dataclass
class EchoTrace:
    """Per-frame record of a session in the simulated room (all on the input timeline)."""

    mic: list = field(default_factory=list)  # what the microphone captured
    cleaned: list = field(default_factory=list)  # what the loop heard
    echo: list = field(default_factory=list)  # the echo part of mic
    user: list = field(default_factory=list)  # the user's part of mic (through the room)
    robot: list = field(default_factory=list)  # robot output of each step (as played)
    barge_in_samples: list = field(default_factory=list)  # VAD decision sample of each barge-in
    speech_prob: list = field(default_factory=list)  # the VAD's highest probability per frame
    echo_suppressed: list = field(default_factory=list)  # per frame: the canceller was at work

    def add(self, mic, cleaned, echo, user, robot, barge_in_sample: int | None,
            speech_prob: float = 0.0, echo_suppressed: bool = False) -> None:
        self.mic.append(np.asarray(mic, np.float32))
        self.cleaned.append(np.asarray(cleaned, np.float32))
        self.echo.append(np.asarray(echo, np.float32))
        self.user.append(np.asarray(user, np.float32))
        self.robot.append(np.asarray(robot, np.float32))
        if barge_in_sample is not None:
            self.barge_in_samples.append(int(barge_in_sample))
        self.speech_prob.append(float(speech_prob))
        self.echo_suppressed.append(bool(echo_suppressed))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(getattr(self, k)) if getattr(self, k) else np.zeros(0, np.float32)
                for k in ("mic", "cleaned", "echo", "user", "robot")}


def _block_power(x: np.ndarray) -> np.ndarray:
    n = x.shape[0] // BLOCK
    return np.mean(x[: n * BLOCK].astype(np.float64).reshape(n, BLOCK) ** 2, axis=1)


def _dilate(mask: np.ndarray, before: int, after: int) -> np.ndarray:
    """True where ``mask`` is True within ``before`` blocks later or ``after`` blocks earlier."""
    out = mask.copy()
    for s in range(1, before + 1):
        out[:-s] |= mask[s:]
    for s in range(1, after + 1):
        out[s:] |= mask[:-s]
    return out


def user_onsets(user_power: np.ndarray, threshold: float, min_gap_blocks: int = 40) -> list[int]:
    """Blocks where the user starts speaking after at least ``min_gap_blocks`` of silence."""
    active = user_power > threshold
    onsets, silent = [], min_gap_blocks
    for i, a in enumerate(active):
        if a and silent >= min_gap_blocks:
            onsets.append(i)
        silent = 0 if a else silent + 1
    return onsets


def echo_metrics(trace: EchoTrace, rate: int = MODEL_RATE, echo_dbfs: float = -50.0,
                 user_dbfs: float = -50.0, robot_dbfs: float = -50.0) -> dict:
    """The figures above from one session's trace."""
    a = trace.arrays()
    if a["mic"].size < BLOCK:
        return {}
    echo_p, user_p = _block_power(a["echo"]), _block_power(a["user"])
    out_p, robot_p = _block_power(a["cleaned"]), _block_power(a["robot"])
    n = min(echo_p.shape[0], out_p.shape[0])
    echo_p, user_p, out_p = echo_p[:n], user_p[:n], out_p[:n]
    echo_on = echo_p > 10 ** (echo_dbfs / 10)
    user_near = _dilate(user_p > 10 ** (user_dbfs / 10), 20, 30)  # 200 ms before, 300 ms after
    robot_only = echo_on & ~user_near
    result: dict = {"robot_speech_s": round(float(np.sum(robot_p > 10 ** (robot_dbfs / 10))) * BLOCK / rate, 2)}
    first = int(np.argmax(echo_on)) if echo_on.any() else None
    result["first_echo_s"] = None if first is None else round(first * BLOCK / rate, 2)
    if first is not None:
        after = robot_only.copy()
        after[: first + 100] = False  # 1 s after the first word
        if after.any():
            result["erle_db"] = round(float(10 * np.log10(echo_p[after].sum() / max(out_p[after].sum(), 1e-20))), 2)
            # 250 ms windows of robot-only blocks, in time order
            idx = np.flatnonzero(robot_only)
            win = [idx[i:i + 25] for i in range(0, idx.shape[0] - 24, 25)]
            erles = [(w[-1], 10 * np.log10(echo_p[w].sum() / max(out_p[w].sum(), 1e-20))) for w in win]
            late = [e for end, e in erles if end >= first + 100]
            if late:
                result["erle_p10_db"] = round(float(np.percentile(late, 10)), 2)
            conv = next((end for end, e in erles if e >= ERLE_TARGET_DB), None)
            result["converged_s"] = None if conv is None else round((conv + 1 - first) * BLOCK / rate, 2)
        result["robot_only_s"] = round(float(robot_only.sum()) * BLOCK / rate, 2)
    # barge-ins: false when the user has been silent for 0.5 s up to the decision
    user_active = user_p > 10 ** (user_dbfs / 10)
    false = 0
    decisions = [s // BLOCK for s in trace.barge_in_samples]
    for d in decisions:
        lo = max(0, d - 50)
        if not user_active[lo:d + 1].any():
            false += 1
    minutes = result["robot_speech_s"] / 60.0
    result["barge_ins"] = len(decisions)
    result["false_barge_ins"] = false
    result["false_barge_ins_per_min"] = round(false / minutes, 2) if minutes > 0 else None
    # double talk: user onsets while the robot's echo was present in the 300 ms before
    latencies, missed = [], 0
    for onset in user_onsets(user_p, 10 ** (user_dbfs / 10)):
        if not echo_on[max(0, onset - 30):onset].any():
            continue
        hit = [d for d in decisions if onset - 5 <= d <= onset + 100]
        if hit:
            latencies.append(round((hit[0] - onset) * BLOCK / rate * 1000.0, 1))
        else:
            missed += 1
    result["echo_leak_prob"] = _echo_leak(trace, user_active, first)
    result["double_talk_onsets"] = len(latencies) + missed
    result["barge_in_latency_ms"] = latencies
    result["barge_in_missed"] = missed
    return result


def _echo_leak(trace: EchoTrace, user_active: np.ndarray, first_echo: int | None) -> float | None:
    """The highest per-frame speech probability on robot-only frames the canceller was
    cleaning, from 1 s after the robot's first word (see the module docstring)."""
    if first_echo is None or not trace.speech_prob:
        return None
    per_frame = max(1, len(trace.mic[0]) // BLOCK)
    user_near = _dilate(user_active, 50, 50)
    best = None
    for k, (prob, suppressed) in enumerate(zip(trace.speech_prob, trace.echo_suppressed)):
        lo, hi = k * per_frame, (k + 1) * per_frame
        if not suppressed or lo < first_echo + 100 or user_near[lo:hi].any():
            continue
        best = prob if best is None else max(best, prob)
    return None if best is None else round(best, 3)
