"""Head motion of the procedural face (neck pitch, yaw, roll), before attention turns it.

Smooth sum-of-sines motion, full while speaking and ``listening_head_motion_scale`` of it
otherwise; a chin-down pitch (and a little yaw) on bursts of speech energy; a sin^2 nod on
``user_pause`` / ``backchannel``; a lean and a tilt while the user speaks.
"""
from __future__ import annotations

import math

import numpy as np

from facebot.config.face import ProceduralFaceConfig

NOISE_FREQUENCY_HZ = (0.12, 0.7)  # range of the three sines per axis
NOISE_WEIGHT_RANGE = (0.5, 1.5)  # their random weights before normalising to 1 per axis
NOISE_AXIS_SCALE = ((1.0,), (0.8,), (0.5,))  # pitch, yaw, roll
EMPHASIS_YAW_SHARE = 0.3  # yaw swing on emphasis, as a share of its pitch
EMPHASIS_YAW_HZ = 0.23  # ... slowly alternating side


class HeadMotion:
    """``nod(t)`` on a listener event, ``pose(...)`` per frame. The random sines are drawn from
    the face's random stream at construction."""

    def __init__(self, config: ProceduralFaceConfig, rng: np.random.Generator):
        self.config = config
        self._noise_f = rng.uniform(*NOISE_FREQUENCY_HZ, size=(3, 3))
        self._noise_p = rng.uniform(0, 2 * math.pi, size=(3, 3))
        w = rng.uniform(*NOISE_WEIGHT_RANGE, size=(3, 3))
        self._noise_w = w / w.sum(axis=1, keepdims=True) * np.array(NOISE_AXIS_SCALE)
        self._nods: list[float] = []
        self._last_nod = -10.0
        self.nod_count = 0

    def nod(self, t: float) -> bool:
        """Starts a nod at ``t`` unless one started within ``nod_refractory_s``; returns whether."""
        if t - self._last_nod < self.config.nod_refractory_s:
            return False
        self._nods.append(t)
        self._last_nod = t
        self.nod_count += 1
        return True

    def pose(self, tf: float, activity: float, emphasis: float, attention: float, tilt_sign: float) -> np.ndarray:
        """Neck (pitch, yaw, roll) at frame time ``tf``; unclipped."""
        c = self.config
        noise = (self._noise_w * np.sin(2 * math.pi * self._noise_f * tf + self._noise_p)).sum(axis=1)
        scale = c.head_motion_amplitude_rad * (
            activity + c.listening_head_motion_scale * (1.0 - activity)
        )
        neck = noise * scale
        neck[0] += c.emphasis_gain_rad * emphasis
        neck[1] += EMPHASIS_YAW_SHARE * c.emphasis_gain_rad * emphasis * math.sin(2 * math.pi * EMPHASIS_YAW_HZ * tf)
        # listener nods: a sin^2 bump of pitch (chin down and back up)
        live = []
        for start in self._nods:
            u = (tf - start) / c.nod_duration_s
            if u < 1.0:
                live.append(start)
                if u >= 0.0:
                    neck[0] += c.nod_amplitude_rad * math.sin(math.pi * u) ** 2
        self._nods = live
        neck[0] += c.attention_lean_rad * attention
        neck[2] += tilt_sign * c.attention_tilt_rad * attention
        return np.nan_to_num(neck, nan=0.0)
