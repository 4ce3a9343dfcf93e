"""Speech segments of one channel, offline, with the same silero-vad and hysteresis the loop uses.

The loop's VAD decides live; here the whole recording is known, so a segment is simply the
(start, end) of one run of speech on the recording's own timeline. Using the same detector
and settings as the robot keeps "speech" meaning one thing across the project.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebot.audio.vad import SileroVad, VadConfig, VoiceActivity

RATE = 24000
_FLUSH_S = 0.5  # silence appended so that a run still open at the end gets its offset
# Edge refinement: silero's probability rises a window or more late (a soft first syllable
# can be missed entirely) and stays high ~0.1 s after the sound stops, which would read every
# turn-taking latency short. So each edge is then moved to where the sound is: frames of 10 ms
# within REFINE_DB of the segment's loudest count as sound; an edge moves inwards over quiet
# frames (at most INWARD_S) and outwards over sound, bridging quiet gaps up to BRIDGE_S, at
# most OUTWARD_S and never into the neighbouring segment.
REFINE_DB = 40.0
NOISE_MARGIN_DB = 10.0  # and, on a noisy channel, this far above its noise floor
INWARD_S = 0.3
OUTWARD_S = 0.5
BRIDGE_S = 0.08
_HOP_S = 0.01


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def speech_segments(audio: np.ndarray, sample_rate: int = RATE, config: VadConfig | None = None) -> list[Segment]:
    """Runs of speech in mono ``audio`` (seconds from its first sample)."""
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise ValueError(f"speech_segments needs mono audio, got shape {x.shape}")
    config = config or VadConfig()
    vad = SileroVad(sample_rate=sample_rate)
    activity = VoiceActivity.from_config(config, sample_rate)
    padded = np.concatenate([x, np.zeros(int(_FLUSH_S * sample_rate), np.float32)])
    segments, start = [], None
    for event in activity.update(vad.process(padded)):
        if event.kind == "onset":
            start = event.sample
        elif start is not None:
            segments.append(Segment(start / sample_rate, min(event.sample, x.shape[0]) / sample_rate))
            start = None
    return _refine_all(segments, x, sample_rate)


def _refine_all(segments: list[Segment], x: np.ndarray, rate: int) -> list[Segment]:
    hop = int(rate * _HOP_S)
    n = x.shape[0] // hop
    env = np.sqrt(np.mean(np.asarray(x[: n * hop], np.float64).reshape(n, hop) ** 2, axis=1))
    floor = float(np.percentile(env, 10)) if n else 0.0  # the channel's quietest tenth: its noise
    out = []
    for i, seg in enumerate(segments):
        lo = int(np.ceil(segments[i - 1].end_s / _HOP_S)) if i else 0
        hi = int(segments[i + 1].start_s / _HOP_S) if i + 1 < len(segments) else n
        out.append(_refine(seg, env, max(lo, 0), min(hi, n), floor))
    return out


def _refine(seg: Segment, env: np.ndarray, lo: int, hi: int, floor: float) -> Segment:
    """``seg`` with its edges moved to the sound's (frame indices lo..hi are its to take)."""
    a, b = int(seg.start_s / _HOP_S), min(int(np.ceil(seg.end_s / _HOP_S)), hi)
    if b - a < 1 or env[a:b].max() <= 0:
        return seg
    level = max(env[a:b].max() * 10 ** (-REFINE_DB / 20), floor * 10 ** (NOISE_MARGIN_DB / 20))
    sound = env >= level
    inward, outward, bridge = (int(round(v / _HOP_S)) for v in (INWARD_S, OUTWARD_S, BRIDGE_S))
    start = a
    while start < min(b - 1, a + inward) and not sound[start]:
        start += 1
    j, quiet = start - 1, 0
    while j >= max(lo, a - outward) and quiet <= bridge:
        quiet = 0 if sound[j] else quiet + 1
        if sound[j]:
            start = j
        j -= 1
    end = b  # exclusive frame index
    while end > max(start + 1, b - inward) and not sound[end - 1]:
        end -= 1
    j, quiet = end, 0
    while j < min(hi, b + outward) and quiet <= bridge:
        quiet = 0 if sound[j] else quiet + 1
        if sound[j]:
            end = j + 1
        j += 1
    return Segment(start * _HOP_S, end * _HOP_S)


def merge(segments: list[Segment], max_gap_s: float) -> list[Segment]:
    """Joins segments separated by less than ``max_gap_s``."""
    out: list[Segment] = []
    for s in sorted(segments, key=lambda s: s.start_s):
        if out and s.start_s - out[-1].end_s < max_gap_s:
            out[-1] = Segment(out[-1].start_s, max(out[-1].end_s, s.end_s))
        else:
            out.append(s)
    return out


def overlap_s(a: list[Segment], b: list[Segment]) -> float:
    """Total time covered by both segment lists (each assumed non-overlapping within itself)."""
    total = 0.0
    for s in a:
        for t in b:
            lo, hi = max(s.start_s, t.start_s), min(s.end_s, t.end_s)
            if hi > lo:
                total += hi - lo
    return total


def active_at(segments: list[Segment], t: float) -> Segment | None:
    """The segment covering time ``t``, if any."""
    for s in segments:
        if s.start_s <= t < s.end_s:
            return s
    return None
