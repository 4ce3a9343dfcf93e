"""Smoothing filters for actuator targets (numpy, one value per joint, any tick period).

The head controller uses a **one-euro filter** (Casiez, Roussel and Vogel, CHI 2012): a
first-order low-pass whose cutoff rises with the signal's own speed,
``cutoff = min_cutoff_hz + beta * |filtered derivative|``. Slow or still motion (a held head
pose, a resting jaw with token jitter on it) gets a low cutoff and is smoothed hard; fast
motion (lips and jaw during speech, a blink) gets a high cutoff, so the filter adds almost no
lag exactly where lag would show as lips out of sync with the voice. A fixed low-pass (or a
critically damped second-order filter) has to trade those two off with one time constant:
either jitter at rest or a constant delay of about ``1 / (2 pi f_c)`` on every syllable.

Everything is vectorised over joints; ``min_cutoff_hz`` and ``beta`` may differ per joint.
The period is passed with each sample, so irregular control ticks are handled exactly.
"""
from __future__ import annotations

import numpy as np


def smoothing_factor(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray:
    """Exponential smoothing factor of a first-order low-pass with ``cutoff_hz`` at step ``dt``."""
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff_hz, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Adaptive-cutoff low-pass over a vector of channels.

    ``__call__(x, dt)`` returns ``(x_filtered, dx_filtered)``: the smoothed value and the
    smoothed derivative (per second) that chose the cutoff; the derivative doubles as a
    velocity estimate of the target. The first sample after construction or ``reset``
    passes through unchanged (derivative 0).
    """

    def __init__(self, n: int, min_cutoff_hz, beta, d_cutoff_hz: float = 10.0) -> None:
        self.n = int(n)
        self.min_cutoff_hz = np.broadcast_to(np.asarray(min_cutoff_hz, np.float64), (self.n,)).copy()
        self.beta = np.broadcast_to(np.asarray(beta, np.float64), (self.n,)).copy()
        self.d_cutoff_hz = float(d_cutoff_hz)
        if np.any(self.min_cutoff_hz <= 0) or np.any(self.beta < 0) or self.d_cutoff_hz <= 0:
            raise ValueError("one-euro filter needs min_cutoff_hz > 0, beta >= 0, d_cutoff_hz > 0")
        self._x: np.ndarray | None = None
        self._dx = np.zeros(self.n)

    def reset(self, x: np.ndarray | None = None) -> None:
        """Forget the history; with ``x`` the filter restarts from that value at rest."""
        self._x = None if x is None else np.array(x, np.float64, copy=True)
        self._dx = np.zeros(self.n)

    @property
    def primed(self) -> bool:
        return self._x is not None

    @property
    def value(self) -> np.ndarray | None:
        """The last output (None before the first sample): what a replacement filter restarts from."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float64)
        if self._x is None or not dt > 0:
            if self._x is None:
                self._x = x.copy()
                self._dx = np.zeros(self.n)
            return self._x.copy(), self._dx.copy()
        raw_dx = (x - self._x) / dt
        self._dx = self._dx + smoothing_factor(self.d_cutoff_hz, dt) * (raw_dx - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        self._x = self._x + smoothing_factor(cutoff, dt) * (x - self._x)
        return self._x.copy(), self._dx.copy()


class PassThrough:
    """The ``kind: none`` filter: the target unchanged, derivative by finite difference."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._x: np.ndarray | None = None

    def reset(self, x: np.ndarray | None = None) -> None:
        self._x = None if x is None else np.array(x, np.float64, copy=True)

    @property
    def primed(self) -> bool:
        return self._x is not None

    @property
    def value(self) -> np.ndarray | None:
        """The last output (None before the first sample): what a replacement filter restarts from."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float64)
        dx = np.zeros(self.n) if self._x is None or not dt > 0 else (x - self._x) / dt
        self._x = x.copy()
        return x.copy(), dx
