"""Whether the robot is speaking, as the face shows it: its flag or its voice (until a short
hangover after the voice stops), where its phrases end (a cue for a blink), how active the
face is (scales head motion), and emphasis on bursts of energy (chin-down pitch, brows)."""
from __future__ import annotations

from facebot.face.smoothing import first_order_share

VOICED_ENVELOPE = 0.15  # audio envelope above this is voice
VOICED_JAW_OPEN = 0.1  # ... as is a jaw opened this far (phoneme-driven lips)
HANGOVER_S = 0.15  # still speaking this long after the voice stops
MIN_PHRASE_S = 0.4  # shorter voiced stretches do not end a phrase
ACTIVITY_TIME_S = 0.3  # time constant of the activity level
SLOW_ENERGY_TIME_S = 0.4  # the baseline a burst stands out from
BURST_GAIN = 2.0  # emphasis target = min(1, gain * burst)
EMPHASIS_TIME_S = 0.1


class SpeechActivity:
    """``flag_dropped`` once per cue, ``frame`` once per frame; ``activity`` and ``emphasis``
    are in [0, 1]."""

    def __init__(self) -> None:
        self.activity = 0.0
        self.emphasis = 0.0
        self._voiced_since: float | None = None
        self._last_voiced = -10.0
        self._was_speaking_flag = False
        self._slow_energy = 0.0

    def flag_dropped(self, robot_speaking: bool) -> bool:
        """Whether the source's speaking flag just went off: the end of a phrase."""
        dropped = self._was_speaking_flag and not robot_speaking
        self._was_speaking_flag = robot_speaking
        return dropped

    def frame(self, tf: float, dt: float, robot_speaking: bool, envelope: float, jaw_open: float,
              barging: bool) -> tuple[bool, bool]:
        """``(speaking, phrase_ended)`` at frame time ``tf``."""
        voiced = (not barging) and (envelope > VOICED_ENVELOPE or jaw_open > VOICED_JAW_OPEN)
        phrase_ended = False
        if voiced:
            if self._voiced_since is None:
                self._voiced_since = tf
            self._last_voiced = tf
        elif self._voiced_since is not None and tf - self._last_voiced > HANGOVER_S:
            phrase_ended = self._last_voiced - self._voiced_since >= MIN_PHRASE_S
            self._voiced_since = None
        speaking = robot_speaking or (tf - self._last_voiced) <= HANGOVER_S
        self.activity += ((1.0 if speaking else 0.0) - self.activity) * first_order_share(dt, ACTIVITY_TIME_S)

        energy = max(envelope, jaw_open)
        self._slow_energy += (energy - self._slow_energy) * first_order_share(dt, SLOW_ENERGY_TIME_S)
        burst = max(0.0, energy - self._slow_energy) if speaking else 0.0
        self.emphasis += (min(1.0, BURST_GAIN * burst) - self.emphasis) * first_order_share(dt, EMPHASIS_TIME_S)
        return speaking, phrase_ended
