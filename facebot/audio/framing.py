"""Re-framing any incoming audio stream into the model's 24 kHz mono, 1920-sample frames.

Chunks may come at any rate, channel count and size. Each frame carries the capture time of
its first sample, derived from the stream position rather than from per-chunk stamps, so
jitter in chunk delivery does not jitter the frames. A gap in the incoming stamps (dropped
chunks upstream) is filled with silence to keep the timeline; a jump backwards or a gap too
long to bridge restarts the timeline, and both are counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from facebot.audio.pcm import check_sample_rate, to_mono

MODEL_RATE = 24_000
FRAME_SAMPLES = 1_920  # 80 ms at 24 kHz: one model step (12.5 Hz)
FRAME_NS = 80_000_000
NS_PER_S = 1_000_000_000


@dataclass
class AudioFrame:
    """One model frame of audio: ``samples`` (1920,) float32; ``stamp_ns`` of its first sample."""

    samples: np.ndarray
    stamp_ns: int
    index: int
    filled_ns: int = 0  # how much of the frame is inserted silence (gap filling, final padding)
    # The echo canceller was removing the robot's voice from these samples (its reference was
    # active): its suppressor holds back the first syllables of a user who talks over the
    # robot, so the VAD confirms an onset sooner (facebot.audio.vad.VadConfig).
    echo_suppressed: bool = False
    # What the VAD hears when it differs from ``samples``: the echo canceller's output before
    # noise suppression (facebot.audio.echo).
    vad_samples: np.ndarray | None = None


@dataclass
class FramingStats:
    chunks: int = 0
    gaps_filled: int = 0
    gap_fill_ns: int = 0
    restarts: int = 0
    rate_changes: int = 0
    non_finite_samples: int = 0


class StreamResampler:
    """Streaming sample-rate conversion with soxr (time-aligned: no drift, no offset)."""

    def __init__(self, in_rate: int, out_rate: int = MODEL_RATE, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate = check_sample_rate(in_rate), check_sample_rate(out_rate)
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=quality
        )

    def process(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is None:
            return x
        return self._stream.resample_chunk(x, last=last)


class AudioFramer:
    """Chunks in (any rate, channels, size), 80 ms model frames out.

    ``push`` returns the frames completed by this chunk; ``flush`` pads and returns the rest.
    """

    def __init__(
        self,
        rate: int = MODEL_RATE,
        frame_samples: int = FRAME_SAMPLES,
        max_gap_fill_s: float = 1.0,
        gap_tolerance_s: float = 0.02,
    ) -> None:
        self.rate = rate
        self.frame_samples = frame_samples
        self.max_gap_fill_s = max_gap_fill_s
        self.gap_tolerance_s = gap_tolerance_s
        self.stats = FramingStats()
        self._resampler: StreamResampler | None = None
        self._buffer = np.zeros(0, np.float32)
        self._filled_in_buffer: list[tuple[int, int]] = []  # (start, length) of inserted silence
        self._anchor_ns: int | None = None  # capture time of output sample 0 of this timeline
        self._emitted = 0  # output samples emitted as frames on this timeline
        self._in_samples = 0  # input samples seen on this timeline, at the input rate
        self._index = 0

    def _sample_to_ns(self, n: int) -> int:
        return self._anchor_ns + (n * NS_PER_S) // self.rate

    def _expected_next_ns(self) -> int:
        rate = self._resampler.in_rate
        return self._anchor_ns + (self._in_samples * NS_PER_S) // rate

    def push(self, samples: np.ndarray, sample_rate: int, stamp_ns: int) -> list[AudioFrame]:
        """Adds one captured chunk; ``stamp_ns`` is the capture time of its first sample."""
        mono = to_mono(samples)
        bad = ~np.isfinite(mono)
        if bad.any():
            self.stats.non_finite_samples += int(bad.sum())
            mono = np.where(bad, 0.0, mono).astype(np.float32)
        self.stats.chunks += 1
        frames: list[AudioFrame] = []
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            if self._resampler is not None:
                self.stats.rate_changes += 1
                frames += self._end_timeline()
            self._start_timeline(sample_rate, stamp_ns)
        else:
            drift_s = (stamp_ns - self._expected_next_ns()) / NS_PER_S
            if drift_s > self.gap_tolerance_s and drift_s <= self.max_gap_fill_s:
                self._fill_gap(drift_s)
            elif drift_s > self.max_gap_fill_s or drift_s < -self.max_gap_fill_s:
                self.stats.restarts += 1
                frames += self._end_timeline()
                self._start_timeline(sample_rate, stamp_ns)
        self._in_samples += mono.shape[0]
        self._append(self._resampler.process(mono))
        return frames + self._take_frames()

    def flush(self) -> list[AudioFrame]:
        """Ends the stream: the last partial frame is padded with silence."""
        return self._end_timeline()

    def _start_timeline(self, sample_rate: int, stamp_ns: int) -> None:
        self._resampler = StreamResampler(sample_rate, self.rate)
        self._anchor_ns = int(stamp_ns)
        self._emitted = 0
        self._in_samples = 0
        self._buffer = np.zeros(0, np.float32)
        self._filled_in_buffer = []

    def _end_timeline(self) -> list[AudioFrame]:
        if self._resampler is None:
            return []
        self._append(self._resampler.process(np.zeros(0, np.float32), last=True))
        # The resampler's output count can differ from the input's by a sample or two;
        # trim or pad to the exact input duration so that the timeline stays exact.
        total = (self._in_samples * self.rate) // self._resampler.in_rate
        have = self._emitted + self._buffer.shape[0]
        if have > total:
            self._buffer = self._buffer[: max(0, total - self._emitted)]
        frames = self._take_frames()
        if self._buffer.shape[0]:
            missing = self.frame_samples - self._buffer.shape[0]
            self._filled_in_buffer.append((self._buffer.shape[0], missing))
            self._append(np.zeros(missing, np.float32))
            frames += self._take_frames()
        self._resampler = None
        return frames

    def _fill_gap(self, gap_s: float) -> None:
        n_in = int(round(gap_s * self._resampler.in_rate))
        n_out = int(round(gap_s * self.rate))
        self.stats.gaps_filled += 1
        self.stats.gap_fill_ns += int(gap_s * NS_PER_S)
        # Flush what the resampler holds so the silence lands after it, in order.
        held = self._resampler.process(np.zeros(0, np.float32), last=True)
        self._append(held)
        self._resampler = StreamResampler(self._resampler.in_rate, self.rate)
        pending = (self._in_samples * self.rate) // self._resampler.in_rate - (self._emitted + self._buffer.shape[0])
        if pending > 0:
            self._append(np.zeros(pending, np.float32))
        elif pending < 0:
            self._buffer = self._buffer[: self._buffer.shape[0] + pending]
        self._filled_in_buffer.append((self._buffer.shape[0], n_out))
        self._append(np.zeros(n_out, np.float32))
        self._in_samples += n_in

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._buffer = np.concatenate([self._buffer, x.astype(np.float32, copy=False)])

    def _take_frames(self) -> list[AudioFrame]:
        frames = []
        n = self.frame_samples
        while self._buffer.shape[0] >= n:
            filled = 0
            rest = []
            for start, length in self._filled_in_buffer:
                overlap = max(0, min(start + length, n) - max(start, 0))
                filled += overlap
                if start + length > n:
                    rest.append((max(start - n, 0), start + length - max(start, n)))
            self._filled_in_buffer = rest
            frames.append(
                AudioFrame(
                    samples=self._buffer[:n].copy(),
                    stamp_ns=self._sample_to_ns(self._emitted),
                    index=self._index,
                    filled_ns=filled * NS_PER_S // self.rate,
                )
            )
            self._buffer = self._buffer[n:]
            self._emitted += n
            self._index += 1
        return frames
