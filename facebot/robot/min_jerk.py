"""The min-jerk profile of the ease to neutral (watchdog, e-stop ``neutral``) and its peaks,
which the configuration checks against each joint's limits."""
from __future__ import annotations

import math

import numpy as np

# Peaks of the min-jerk profile s(u) = 10u^3 - 15u^4 + 6u^5 over distance D and time T:
MINJERK_PEAK_VELOCITY = 15.0 / 8.0  # * D / T
MINJERK_PEAK_ACCELERATION = 10.0 / math.sqrt(3.0)  # * D / T^2


def min_jerk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-jerk profile ``s(u)`` and ``ds/du`` for ``u`` clipped to [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u ** 3 * (10.0 - 15.0 * u + 6.0 * u * u), 30.0 * u * u * (1.0 - u) ** 2
