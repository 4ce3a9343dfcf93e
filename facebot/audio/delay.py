"""Coarse loudspeaker-to-microphone delay: GCC-PHAT of the reference against the microphone.

The reference carries its playout stamps and the microphone its capture stamps, but neither
clock knows the sound card's real latencies, so the echo shows up some tens to hundreds of
milliseconds away from where the stamps put it, differently on every robot, and it drifts.
AEC3 has its own fine delay estimator, but it only looks a few hundred milliseconds back and
never forward, so we find the coarse offset here and feed AEC3 a reference shifted by it.

GCC-PHAT (generalised cross-correlation with phase transform) whitens both spectra, so the
correlation peak is sharp even for voiced speech and reverberant rooms. An estimate is taken
only when the reference carried speech and the peak stands well out of the correlation's
floor; the tracked delay moves only when two of the last three estimates agree, so double
talk or a noisy window cannot throw it.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import soxr

from facebot.config.echo import DelayConfig


@dataclass
class DelayEstimate:
    delay_ms: float
    peak_ratio: float


def gcc_phat(mic: np.ndarray, reference: np.ndarray, rate: int, lags: tuple[int, int],
             band_hz: tuple[float, float] = (150.0, 3800.0)) -> tuple[int, float]:
    """The lag (samples) in ``[lags[0], lags[1]]`` at which ``mic[t]`` best matches
    ``reference[t - lag + lags[1]]`` and the peak's ratio to the correlation's RMS.

    ``reference`` must be ``len(mic) + lags[1] - lags[0]`` long: it starts ``lags[1]``
    samples before the microphone window and ends ``-lags[0]`` after it.
    """
    lo, hi = lags
    n_mic = mic.shape[0]
    if reference.shape[0] != n_mic + hi - lo:
        raise ValueError("gcc_phat: reference length must be len(mic) + max lag - min lag")
    n = 1 << int(np.ceil(np.log2(n_mic + reference.shape[0])))
    spec = np.conj(np.fft.rfft(mic, n)) * np.fft.rfft(reference, n)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spec[(freqs < band_hz[0]) | (freqs > band_hz[1])] = 0.0
    mag = np.abs(spec)
    spec = spec / (mag + 1e-3 * (mag.max() + 1e-20))
    corr = np.fft.irfft(spec, n)[: hi - lo + 1]  # corr[k]: reference shifted by k
    k = int(np.argmax(corr))
    floor = float(np.sqrt(np.mean(corr ** 2))) + 1e-12
    return hi - k, float(corr[k] / floor)


class DelayTracker:
    """Keeps the tracked delay from a stream of GCC-PHAT estimates."""

    def __init__(self, config: DelayConfig | None = None, initial_ms: float = 0.0) -> None:
        self.config = config or DelayConfig()
        self.delay_ms = float(np.clip(initial_ms, self.config.min_delay_ms, self.config.max_delay_ms))
        self.confirmed = False
        self.estimates = 0  # windows with enough reference to try
        self.accepted = 0  # of those, peaks clear enough to count
        self.changes = 0
        self.last: DelayEstimate | None = None
        self._recent: collections.deque = collections.deque(maxlen=3)

    @property
    def lag_range_ms(self) -> tuple[float, float]:
        return self.config.min_delay_ms, self.config.max_delay_ms

    def reference_span_s(self) -> tuple[float, float]:
        """How far before and after the microphone window the reference must reach."""
        return self.config.max_delay_ms / 1000.0, max(0.0, -self.config.min_delay_ms) / 1000.0

    def update(self, mic: np.ndarray, reference: np.ndarray, rate: int) -> float | None:
        """One estimate from ``mic`` (the window) and ``reference`` (from ``max_delay`` before
        the window to ``-min_delay`` after it, at the same rate); returns the new tracked
        delay when it changed."""
        c = self.config
        ar = c.analysis_rate
        before, after = self.reference_span_s()
        m = soxr.resample(np.asarray(mic, np.float32), rate, ar) if rate != ar else np.asarray(mic, np.float32)
        r = soxr.resample(np.asarray(reference, np.float32), rate, ar) if rate != ar else np.asarray(reference, np.float32)
        lo, hi = int(round(-after * ar)), int(round(before * ar))
        want = m.shape[0] + hi - lo
        r = np.pad(r, (0, max(0, want - r.shape[0])))[:want]
        if not (np.isfinite(m).all() and np.isfinite(r).all()):
            return None
        rms = float(np.sqrt(np.mean(r ** 2))) if r.size else 0.0
        if rms <= 10 ** (c.min_reference_dbfs / 20.0):
            return None
        self.estimates += 1
        lag, ratio = gcc_phat(m, r, ar, (lo, hi))
        self.last = DelayEstimate(1000.0 * lag / ar, ratio)
        if ratio < c.min_peak_ratio:
            return None
        self.accepted += 1
        self._recent.append(self.last.delay_ms)
        agreeing = [d for d in self._recent if abs(d - self.last.delay_ms) <= c.agree_ms]
        if len(agreeing) < 2:
            return None
        new = float(np.median(agreeing))
        self.confirmed = True
        if abs(new - self.delay_ms) <= c.agree_ms / 2:
            return None
        self.delay_ms = new
        self.changes += 1
        return new
