"""The input stage that removes the robot's own voice from the microphone before the VAD.

It holds what the loudspeaker played (the far-end reference) on a sample grid placed by the
chunks' playout stamps, re-framed from any rate, channel count and chunk size exactly as the
microphone is (``AudioFramer``). For each microphone frame it reads the reference that was
heard earlier by a coarse shift, and runs WebRTC's AEC3 on the pair (``facebot.audio.echo``).
The delay starts at a guess and is tracked by GCC-PHAT (``facebot.audio.delay``). AEC3 finds
the remaining delay itself, but only if the reference comes first and not more than a few
hundred ms ahead, and it re-finds a changed delay slowly (seconds). So the shift is moved only
when the tracked delay leaves the band AEC3 handles (``guard_ms`` to ``aec_span_ms`` after
the shifted reference); then the canceller starts afresh, which converges in well under a
second, and small drifts inside the band are left to AEC3.

The same stage serves ``facebot run --play`` / ``--echo-room`` (reference = the frames sent
to the speaker, stamped with their playout time) and the dialogue node (reference =
``audio/played``, stamped with when it was heard). A missing or late reference never stops
the stream: the frame is processed against silence (noise suppression still applies, the echo
passes) and counted.

Each cleaned frame also carries what the VAD should hear (the canceller's output before noise
suppression) and whether the robot's echo was being suppressed in it: a user who talks over
the robot is held back by AEC3 for the first syllables, and the VAD confirms such an onset
sooner (``facebot.audio.vad.VadConfig.echo_min_speech_ms``).
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from facebot.audio.delay import DelayTracker
from facebot.audio.echo import BLOCK_MS, EchoCanceller, EchoConfig
from facebot.audio.framing import MODEL_RATE, AudioFrame, AudioFramer
from facebot.audio.sample_timeline import SampleTimeline, stamp_to_index
from facebot.config.echo import EchoStageConfig

REFERENCE_BLOCK = MODEL_RATE // 100  # the reference is placed in 10 ms frames
LIVE_OPTIONS = ("echo_cancellation", "noise_suppression", "high_pass_filter", "echo_delay_ms")


class EchoInputStage:
    """Microphone frames in, echo-cancelled frames out; the played reference fed beside."""

    def __init__(self, config: EchoStageConfig | None = None, rate: int = MODEL_RATE) -> None:
        self.config = config or EchoStageConfig()
        self.rate = rate
        c = self.config
        self.canceller = EchoCanceller(self._echo_config(c))
        self.tracker = DelayTracker(c.delay, initial_ms=c.echo_delay_ms)
        capacity = int(c.history_s * rate)
        self.reference = SampleTimeline(capacity)
        self._mic = SampleTimeline(capacity)
        self._framer = AudioFramer(rate=rate, frame_samples=REFERENCE_BLOCK)
        self.counts = collections.Counter()
        self._consumed_end: int | None = None  # one past the last reference sample given to AEC3
        self._next_estimate: int | None = None
        self._missing_run = 0  # consecutive frames without reference
        self._late_run = 0  # consecutive reference chunks that came too late
        self._reference_active_end: int | None = None  # mic sample after the last frame with an active reference
        self.shift_ms = self._target_shift(c.echo_delay_ms)  # reference read this much before the mic

    def _echo_config(self, c: EchoStageConfig) -> EchoConfig:
        return EchoConfig(echo_cancellation=c.echo_cancellation, noise_suppression=c.noise_suppression,
                          high_pass_filter=c.high_pass_filter, rate=self.rate)

    # -- options --------------------------------------------------------------------------

    def configure(self, **changes) -> None:
        """Live switches (``echo_cancellation``, ``noise_suppression``, ``high_pass_filter``,
        ``echo_delay_ms``); ``ValueError`` for an unknown option or a bad value."""
        unknown = set(changes) - set(LIVE_OPTIONS)
        if unknown:
            raise ValueError(f"echo: unknown option(s) {', '.join(sorted(unknown))}")
        new = dataclasses.replace(self.config, **changes)  # validates
        self.config = new
        if "echo_delay_ms" in changes and new.echo_delay_ms != self.tracker.delay_ms:
            self.tracker = DelayTracker(new.delay, initial_ms=new.echo_delay_ms)  # a new guess restarts tracking
            self._shift_to(new.echo_delay_ms)
        self.canceller.configure(**dataclasses.asdict(self._echo_config(new)))

    def _target_shift(self, delay_ms: float) -> float:
        return delay_ms - self.config.guard_ms

    def _shift_to(self, delay_ms: float) -> None:
        self.shift_ms = self._target_shift(delay_ms)
        self.canceller.restart()
        self.counts["shifts"] += 1

    def _follow_delay(self) -> None:
        """Moves the shift when the tracked delay left the band AEC3 handles by itself."""
        remaining = self.tracker.delay_ms - self.shift_ms
        if not self.config.min_lead_ms <= remaining <= self.config.aec_span_ms:
            self._shift_to(self.tracker.delay_ms)

    @property
    def delay_ms(self) -> float:
        return self.tracker.delay_ms

    # -- reference ------------------------------------------------------------------------

    def add_reference(self, samples: np.ndarray, sample_rate: int, stamp_ns: int) -> bool:
        """Adds what the loudspeaker played from ``stamp_ns`` on (any rate, channels, size).

        Returns False (and counts it) for a chunk that cannot be used."""
        try:
            x = np.asarray(samples, np.float32)
            if x.size == 0:
                raise ValueError("no samples")
            frames = self._framer.push(x, int(sample_rate), int(stamp_ns))
        except (ValueError, TypeError) as err:
            self.counts["reference_refused"] += 1
            self.last_refusal = str(err)
            return False
        self.counts["reference_chunks"] += 1
        start = stamp_to_index(stamp_ns, self.rate)
        self._late_run = self._late_run + 1 if (
            self._consumed_end is not None and start < self._consumed_end - self.rate // 100) else 0
        if self._late_run:
            self.counts["reference_late_chunks"] += 1  # the canceller already ran without it
            if self._late_run >= 3 and self.shift_ms < 0.0 <= self.tracker.delay_ms - self.config.min_lead_ms:
                # reading ahead of the microphone finds nothing yet: read at its own time
                self.shift_ms = 0.0
                self.canceller.restart()
                self.counts["shifts"] += 1
        for f in frames:
            if f.filled_ns >= 10_000_000:  # a gap the framer bridged: not known to be silence
                continue
            self.reference.write(stamp_to_index(f.stamp_ns, self.rate), f.samples)
        return True

    # -- microphone -----------------------------------------------------------------------

    def process(self, frame: AudioFrame) -> AudioFrame:
        """The frame with the robot's echo removed (and noise suppressed, high-passed)."""
        mic = np.asarray(frame.samples, np.float32)
        n = mic.shape[0]
        start = stamp_to_index(frame.stamp_ns, self.rate)
        self.counts["frames"] += 1
        c = self.config
        if not self.canceller.config.any_enabled:
            return frame
        shift = int(round(self.shift_ms * self.rate / 1000.0))
        reference, _ = self.reference.read(start - shift, n)
        _, covered = self.reference.read(start - int(round(self.tracker.delay_ms * self.rate / 1000.0)), n)
        if c.echo_cancellation and covered < n // 2:
            self.counts["reference_missing_frames"] += 1
            self._missing_run += 1
        else:
            self._missing_run = 0
        remaining_ms = max(0, int(round(self.tracker.delay_ms - self.shift_ms)))
        active_before = self.canceller.active_blocks
        cleaned, vad_view = self.canceller.process(mic, reference, remaining_ms)
        active = self.canceller.active_blocks > active_before
        self._mic.write(start, mic)
        self._consumed_end = start - shift + n
        if c.echo_cancellation and c.track_delay:
            self._maybe_estimate(start + n)
        return dataclasses.replace(frame, samples=cleaned, vad_samples=vad_view,
                                   echo_suppressed=self._echo_suppressed(active, start + n))

    def _echo_suppressed(self, active: bool, end: int) -> bool:
        """Whether a converged AEC3 is at work on the robot's voice in the frame ending at
        ``end``: its reference was ``active`` in it or within ``suppression_hold_ms``."""
        if active:
            self._reference_active_end = end
        settled = self.canceller.active_blocks * BLOCK_MS >= self.config.suppression_settle_s * 1000.0
        hold = int(self.config.suppression_hold_ms * self.rate / 1000.0)
        return (settled and self._reference_active_end is not None
                and end - self._reference_active_end <= hold)

    def _maybe_estimate(self, mic_end: int) -> None:
        d = self.config.delay
        window = int(d.window_s * self.rate)
        before, after = self.tracker.reference_span_s()
        lag_after = int(round(after * self.rate))
        if self._next_estimate is None:
            self._next_estimate = mic_end + window + lag_after
        if mic_end < self._next_estimate:
            return
        self._next_estimate = mic_end + int(self.config.estimate_every_s * self.rate)
        w_end = mic_end - lag_after  # the window ends early enough for negative delays
        mic, have = self._mic.read(w_end - window, window)
        if have < window * 0.9:
            return
        ref, _ = self.reference.read(w_end - window - int(round(before * self.rate)),
                                     window + int(round(before * self.rate)) + lag_after)
        if self.tracker.update(mic, ref, self.rate) is not None:
            self.counts["delay_changes"] += 1
            self._follow_delay()

    # -- reporting ------------------------------------------------------------------------

    @property
    def reference_status(self) -> str:
        if not self.config.echo_cancellation:
            return "off"
        if self.counts["reference_chunks"] == 0:
            return "no reference received"
        if self._late_run >= 5:
            return "reference late (arrives after its echo; echo passes through)"
        if self._missing_run >= 5:
            return "reference missing (echo passes through)"
        return "ok"

    def stats(self) -> dict:
        """What diagnostics and summary.json show."""
        erle = self.canceller.erle_db
        last = self.tracker.last
        return {
            "echo_cancellation": self.config.echo_cancellation,
            "noise_suppression": self.config.noise_suppression,
            "high_pass_filter": self.config.high_pass_filter,
            "reference": self.reference_status,
            "estimated_delay_ms": round(self.tracker.delay_ms, 2),
            "delay_confirmed": self.tracker.confirmed,
            "reference_shift_ms": round(self.shift_ms, 2),
            "reference_shifts": self.counts["shifts"],
            "delay_estimates": self.tracker.estimates,
            "delay_accepted": self.tracker.accepted,
            "last_peak_ratio": round(last.peak_ratio, 2) if last else None,
            "erle_db": round(erle, 2) if erle is not None else None,
            "cpu_ms_per_10ms": round(self.canceller.cpu_ms_per_block, 4),
            "frames": self.counts["frames"],
            "reference_chunks": self.counts["reference_chunks"],
            "reference_refused": self.counts["reference_refused"],
            "reference_missing_frames": self.counts["reference_missing_frames"],
            "reference_late_chunks": self.counts["reference_late_chunks"],
        }
