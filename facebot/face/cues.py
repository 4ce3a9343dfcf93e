"""What the face needs to know about one 80 ms model frame, from any speech source."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from facebot.audio.timing import PhonemeSpan
from facebot.face.flame import FPS


@dataclass
class FaceCue:
    """Inputs for the face frames of one model frame (two FLAME frames at 25 fps).

    Times are seconds relative to the first sample of this frame's robot audio, so
    ``robot_audio[0]`` is heard at 0.0 and the two face frames are shown at 0.0 and 0.04.
    """

    robot_audio: np.ndarray  # (1920,) float32, 24 kHz, the robot's voice for this frame
    # Phonemes of the robot's speech overlapping [-0.2 s, +0.4 s] around this frame, with
    # times relative to this frame's start; None when the source gives no timing (then the
    # face follows the audio envelope).
    phonemes: Sequence[PhonemeSpan] | None = None
    robot_speaking: bool = False
    user_speaking: bool = False  # VAD decision for the user's audio in this frame
    user_speech_prob: float = 0.0
    user_pause: bool = False  # the user paused mid-turn: a listener nods or says "mm-hmm"
    backchannel: bool = False  # the robot emits a backchannel in this frame
    barge_in: bool = False  # the user just interrupted the robot; its speech was cut
    # Where the user is, as the robot's gaze toward them: (neck_pose (3,), eyes (pitch, yaw))
    # in FLAME angles within the head's limits (facebot.perception.attention); None: unknown.
    look_at: tuple | None = None
    extras: dict = field(default_factory=dict)


FRAME_PERIOD_S = 1.0 / FPS  # 0.04: one face frame
FRAMES_PER_CUE = 2
CUE_PERIOD_S = FRAMES_PER_CUE * FRAME_PERIOD_S  # 0.08: one model frame, one cue
