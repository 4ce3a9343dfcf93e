"""Acoustic echo cancellation with WebRTC's audio processing (AEC3), through ``livekit``.

The robot's loudspeaker sits centimetres from its microphone, so the microphone hears the
robot's own voice and the VAD takes it for the user. WebRTC's AudioProcessingModule removes
it: AEC3 (a linear filter with its own fine delay estimator plus a residual-echo
suppressor), noise suppression and a high-pass filter, each switchable. We never write our
own adaptive filter: AEC3 is what browsers ship and handles double talk, delay changes and
non-linear loudspeakers far better than anything short.

The module works on 10 ms blocks of 16-bit PCM. It accepts 24 kHz (the model rate) directly
(checked: 8, 16, 24, 32, 44.1 and 48 kHz all run, and 24 kHz cancels as well as 48 kHz), so
no resampling is needed here; other rates are converted upstream by the framer.

``EchoCanceller.process`` takes the microphone and a reference already placed on its timeline
(``facebot.pipeline.echo_stage`` shifts it so that the echo comes 5-250 ms after it), so AEC3
only has to find a small, positive remaining delay.

Two modules run in a row: AEC3 with the high-pass filter, then noise suppression alone. The
VAD hears the signal between them: WebRTC's noise suppressor, just behind AEC3's residual-echo
suppressor, held a user who interrupts the robot back for up to another 60 ms (bench/bench_echo.py,
variant aec-no-ns), while the model and the recordings get the fully cleaned signal. The second
module costs ~0.03 ms per 10 ms.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

BLOCK_MS = 10
INT16_SCALE = 32767.0


@dataclass
class EchoConfig:
    echo_cancellation: bool = True
    noise_suppression: bool = True
    high_pass_filter: bool = True
    rate: int = 24_000
    # Reference activity (dBFS RMS of a 10 ms block) above which a block counts for ERLE.
    erle_reference_dbfs: float = -45.0

    def __post_init__(self) -> None:
        if self.rate not in (8000, 16000, 24000, 32000, 48000):
            raise ValueError(f"echo: rate must be 8, 16, 24, 32 or 48 kHz, got {self.rate}")

    @property
    def any_enabled(self) -> bool:
        return self.echo_cancellation or self.noise_suppression or self.high_pass_filter


def _to_int16(x: np.ndarray) -> bytes:
    y = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(y * INT16_SCALE), -32768, 32767).astype(np.int16).tobytes()


class EchoCanceller:
    """WebRTC APM on 10 ms blocks: ``process(mic, reference)`` -> the cleaned microphone and
    the same before noise suppression.

    ``configure`` switches features live; WebRTC fixes them when the module is made, so a
    change builds a new module (AEC3 re-converges in well under a second of robot speech).
    """

    def __init__(self, config: EchoConfig | None = None) -> None:
        self.config = config or EchoConfig()
        self.block = self.config.rate * BLOCK_MS // 1000
        self.blocks = 0
        self.cpu_s = 0.0  # time spent inside the modules, for the per-frame cost
        self._mic_energy = 0.0  # over blocks with an active reference (ERLE)
        self._out_energy = 0.0
        self._echo_apm = None  # AEC3 and the high-pass filter
        self._noise_apm = None  # noise suppression, after them
        self._rtc = None
        self._build()

    def _build(self) -> None:
        c = self.config
        self._echo_apm = self._noise_apm = None
        self.active_blocks = 0  # blocks with an active reference since AEC3 (re)started
        if not c.any_enabled:
            return
        if self._rtc is None:
            from livekit import rtc

            self._rtc = rtc
        if c.echo_cancellation or c.high_pass_filter:
            self._echo_apm = self._rtc.AudioProcessingModule(
                echo_cancellation=c.echo_cancellation, high_pass_filter=c.high_pass_filter)
        if c.noise_suppression:
            self._noise_apm = self._rtc.AudioProcessingModule(noise_suppression=True)

    def restart(self) -> None:
        """A fresh module: after a jump of the reference alignment, AEC3 converges faster
        from scratch than it re-finds the new delay."""
        self._build()

    def configure(self, **changes) -> bool:
        """Applies feature switches (``echo_cancellation=False`` ...); True if rebuilt."""
        new = dataclasses.replace(self.config, **changes)
        if new == self.config:
            return False
        if new.rate != self.config.rate:
            raise ValueError("echo: the rate cannot change on a running canceller")
        self.config = new
        self._build()
        return True

    def process(self, mic: np.ndarray, reference: np.ndarray, delay_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Cleans ``mic`` (a whole number of 10 ms blocks, float in [-1, 1]): returns the
        cleaned signal and the same before noise suppression (what the VAD hears).

        ``reference`` is what the loudspeaker played, on the microphone's timeline shifted so
        that its echo arrives ``delay_ms`` later (a small positive guard).
        """
        mic = np.asarray(mic, np.float32)
        reference = np.asarray(reference, np.float32)
        if mic.shape != reference.shape or mic.ndim != 1 or mic.shape[0] % self.block:
            raise ValueError(f"echo: need equal 1-D mic and reference in {self.block}-sample blocks, "
                             f"got {mic.shape} and {reference.shape}")
        if not self.config.any_enabled:
            return mic.copy(), mic.copy()
        out = np.empty_like(mic)
        before_ns = np.empty_like(mic)
        n, rate = self.block, self.config.rate
        threshold = self.block * (10 ** (self.config.erle_reference_dbfs / 20.0)) ** 2
        for i in range(0, mic.shape[0], n):
            m, r = mic[i:i + n], reference[i:i + n]
            near = self._rtc.AudioFrame(bytearray(_to_int16(m)), rate, 1, n)
            t0 = time.perf_counter()
            if self._echo_apm is not None:
                if self.config.echo_cancellation:
                    self._echo_apm.process_reverse_stream(self._rtc.AudioFrame(bytearray(_to_int16(r)), rate, 1, n))
                    self._echo_apm.set_stream_delay_ms(int(delay_ms))
                self._echo_apm.process_stream(near)
            before_ns[i:i + n] = np.frombuffer(near.data, np.int16).astype(np.float32) / 32768.0
            if self._noise_apm is not None:
                self._noise_apm.process_stream(near)
            self.cpu_s += time.perf_counter() - t0
            cleaned = np.frombuffer(near.data, np.int16).astype(np.float32) / 32768.0
            out[i:i + n] = cleaned
            self.blocks += 1
            if self.config.echo_cancellation and float(np.dot(r, r)) > threshold:
                self.active_blocks += 1
                decay = 0.995  # ~2 s of active blocks
                self._mic_energy = decay * self._mic_energy + float(np.dot(m, m))
                self._out_energy = decay * self._out_energy + float(np.dot(cleaned, cleaned))
        return out, before_ns

    @property
    def erle_db(self) -> float | None:
        """Running echo return loss enhancement over the last ~2 s with the robot talking
        (mic power / cleaned power; double talk lowers it); None before any such audio."""
        if self._mic_energy <= 0.0:
            return None
        return float(10.0 * np.log10(self._mic_energy / max(self._out_energy, 1e-12)))

    @property
    def cpu_ms_per_block(self) -> float:
        return 1000.0 * self.cpu_s / self.blocks if self.blocks else 0.0
