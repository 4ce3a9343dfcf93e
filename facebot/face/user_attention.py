"""Attention of the procedural face to the user: how much it attends (fully while the user
speaks), a random head tilt side per stretch of attention, raised brows now and then while
listening, and the smoothed turn of neck and eyes toward the user's position (``look_at``)."""
from __future__ import annotations

import numpy as np

from facebot.config.face import ProceduralFaceConfig
from facebot.face.cues import CUE_PERIOD_S
from facebot.face.smoothing import first_order_share

ATTENDING = 0.5  # attention level above which the face counts as listening
NEW_ATTENTION = 0.05  # below this, attention starting again picks a new tilt side
BROW_RAISE_AMPLITUDE = (0.3, 0.6)  # range of a listener's raised-brow pulse (control units)


class UserAttention:
    """``begin_cue`` once per cue, ``update`` then ``look`` once per frame; ``level`` in [0, 1]."""

    def __init__(self, config: ProceduralFaceConfig, rng: np.random.Generator):
        self.config = config
        self._rng = rng
        self.level = 0.0
        self.tilt_sign = 1.0
        self._target = 0.0
        self._look = np.zeros(5)  # smoothed (neck pitch, yaw, roll, eye pitch, yaw) toward the user

    @property
    def attending(self) -> bool:
        return self.level > ATTENDING

    def begin_cue(self, user_speaking: bool) -> float | None:
        """Sets this cue's target; returns the amplitude of a raised-brow pulse to start now,
        if any (draws from the face's random stream: tilt side, then brow)."""
        self._target = 1.0 if user_speaking else 0.0
        if self._target > 0 and self.level < NEW_ATTENTION:
            self.tilt_sign = 1.0 if self._rng.random() < 0.5 else -1.0
        if self.attending and self._rng.random() < self.config.attention_brow_rate_hz * CUE_PERIOD_S:
            return float(self._rng.uniform(*BROW_RAISE_AMPLITUDE))
        return None

    def update(self, dt: float) -> None:
        self.level += (self._target - self.level) * first_order_share(dt, self.config.attention_time_s)

    def look(self, dt: float, look_target: np.ndarray, speaking: bool) -> np.ndarray:
        """The turn toward the user, (neck pitch, yaw, roll, eye pitch, yaw): ``look_target``
        weighted by who is speaking, smoothed with ``look_time_s``."""
        c = self.config
        if self.attending:
            weight = c.look_weight_listening
        else:
            weight = c.look_weight_speaking if speaking else c.look_weight_idle
        self._look += (weight * look_target - self._look) * first_order_share(dt, c.look_time_s)
        return self._look.copy()
