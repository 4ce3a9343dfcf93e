"""Eyes of the procedural face: blinks and saccades.

Blinks come at random ``blink_interval_s`` intervals (close 30 %, shut 25 %, open 45 % of
``blink_duration_s``), sometimes doubled, and likely soon after the robot ends a phrase.
Saccades jump between small gaze targets: half the time back near the partner, otherwise a
little aside; wider while the robot speaks, small and slower while it listens.
"""
from __future__ import annotations

import numpy as np

from facebot.config.face import ProceduralFaceConfig

BLINK_CLOSE_SHARE = 0.30  # of blink_duration_s spent closing
BLINK_HOLD_SHARE = 0.25  # ... shut; the rest opening
DOUBLE_BLINK_GAP_S = 0.12  # between the end of a blink and its double
PHRASE_END_BLINK_DELAY_S = 0.1
PHRASE_END_BLINK_MIN_GAP_S = 1.0  # no phrase-end blink this soon after the last blink
SACCADE_CENTRE_PROB = 0.5  # share of saccades that come back near the partner
SACCADE_CENTRE_SPREAD = 0.2  # their spread, in gaze amplitudes
SACCADE_ASIDE_ASPECT = (0.5, 1.0)  # (pitch, yaw) of the look-aside box, in gaze amplitudes


class Eyes:
    """Draws from the face's random stream, in the order its calls come: construct, then per
    frame ``phrase_end`` (when one ends), ``saccade``, ``blink``."""

    def __init__(self, config: ProceduralFaceConfig, rng: np.random.Generator):
        self.config = config
        self._rng = rng
        self._blinks: list[float] = []
        self._last_blink = -10.0
        self._next_blink = float(rng.uniform(*config.blink_interval_s))
        self.blink_count = 0
        self.gaze = np.zeros(2)  # (pitch, yaw) of the current saccade target
        self._next_saccade = float(rng.uniform(*config.saccade_interval_listening_s))

    def phrase_end(self, t: float) -> None:
        """The robot ended a phrase at ``t``: likely a blink right after."""
        c = self.config
        if t - self._last_blink > PHRASE_END_BLINK_MIN_GAP_S and self._rng.random() < c.phrase_end_blink_prob:
            self._next_blink = min(self._next_blink, t + PHRASE_END_BLINK_DELAY_S)

    def blink(self, tf: float) -> float:
        """Eyelid closure in [0, 1] at frame time ``tf`` (0 open)."""
        c = self.config
        while tf >= self._next_blink:
            start = self._next_blink
            self._blinks.append(start)
            self._last_blink = start
            self.blink_count += 1
            nxt = start + float(self._rng.uniform(*c.blink_interval_s))
            if self._rng.random() < c.double_blink_prob:
                nxt = start + c.blink_duration_s + DOUBLE_BLINK_GAP_S
            self._next_blink = nxt
        d = c.blink_duration_s
        close, hold = BLINK_CLOSE_SHARE * d, BLINK_HOLD_SHARE * d
        value = 0.0
        live = []
        for start in self._blinks:
            u = tf - start
            if u < d:
                live.append(start)
            if u < 0 or u >= d:
                continue
            if u < close:
                v = u / close
            elif u < close + hold:
                v = 1.0
            else:
                v = 1.0 - (u - close - hold) / (d - close - hold)
            value = max(value, v)
        self._blinks = live
        return min(1.0, max(0.0, value))

    def saccade(self, tf: float, speaking: bool, attending: bool) -> None:
        """Jumps ``gaze`` to a new target when the current one has been held long enough."""
        c = self.config
        if tf < self._next_saccade:
            return
        if attending:
            amp, interval = c.gaze_amplitude_listening_rad, c.saccade_interval_listening_s
        elif speaking:
            amp, interval = c.gaze_amplitude_speaking_rad, c.saccade_interval_speaking_s
        else:
            amp, interval = c.gaze_amplitude_idle_rad, c.saccade_interval_listening_s
        if self._rng.random() < SACCADE_CENTRE_PROB:
            target = self._rng.normal(0.0, SACCADE_CENTRE_SPREAD, size=2) * amp
        else:
            target = self._rng.uniform(-1.0, 1.0, size=2) * amp * np.array(SACCADE_ASIDE_ASPECT)
        self.gaze = np.clip(target, -amp, amp)
        self._next_saccade = tf + float(self._rng.uniform(*interval))
