"""The speech-backend seam: one 80 ms step in, one 80 ms step out.

Every speech source (the scripted bring-up backend, the streaming model, an engine) fills
this one interface, so the loop, the face, the recorder and the ROS nodes never care which
is running. A step must return within the frame budget and must not block on I/O.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from facebot.audio.framing import FRAME_SAMPLES
from facebot.audio.timing import PhonemeSpan
from facebot.face.flame import FlameFrame


@dataclass
class UserActivity:
    """What the voice activity detector says about the user in this frame."""

    speaking: bool = False
    speech_prob: float = 0.0  # highest VAD probability in this frame
    onset: bool = False  # the user started speaking in this frame
    onset_sample: int | None = None  # input sample at which the VAD declared speech
    offset: bool = False
    silence_ms: float = 0.0  # since the user last spoke (0 while speaking)
    turn_speech_ms: float = 0.0  # speech accumulated in the user's current turn


@dataclass
class DuplexInput:
    index: int  # model frame number since the session started
    user_audio: np.ndarray  # (1920,) float32, 24 kHz mono
    capture_stamp_ns: int  # capture time of user_audio[0]
    user: UserActivity = field(default_factory=UserActivity)
    user_image: np.ndarray | None = None  # latest camera frame (H, W, 3) uint8 RGB, if any
    # The user's perceived face at this frame's two 25 fps times (capture_stamp, +40 ms),
    # source PERCEIVED; None: no face in view (the model gets its no-face token).
    user_flame: Sequence[FlameFrame] | None = None


@dataclass
class DuplexOutput:
    audio: np.ndarray  # (1920,) float32: the robot's voice for this frame
    speaking: bool = False  # the robot is producing speech (not backchannel-only)
    text: str = ""  # words (or inner-monologue text) the robot started in this frame
    # Phoneme timing around this frame, relative to audio[0] (see face.cues.FaceCue);
    # None when the backend has no timing and the face must follow the audio.
    phonemes: Sequence[PhonemeSpan] | None = None
    flame: Sequence[FlameFrame] | None = None  # the backend's own face (two frames), if any
    barge_in: bool = False  # the robot stopped because the user started speaking
    backchannel: bool = False  # the audio of this frame is a listener backchannel
    user_pause: bool = False  # the backend judged the user to be pausing mid-turn

    def __post_init__(self) -> None:
        # A backend's NaN or overflow must never reach a speaker: it becomes silence / full scale.
        audio = np.asarray(self.audio, dtype=np.float32).reshape(-1)
        self.audio = np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        if self.audio.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"a backend step must return {FRAME_SAMPLES} samples, got {self.audio.shape[0]}")


class SpeechBackend(abc.ABC):
    """A full-duplex speech source stepped once per 80 ms frame."""

    name: str = "backend"

    @abc.abstractmethod
    def reset(self, seed: int = 0) -> None:
        """Starts a new session (clears all streaming state)."""

    @abc.abstractmethod
    def step(self, inp: DuplexInput) -> DuplexOutput:
        """Consumes one frame of user audio and returns one frame of robot output."""

    def describe(self) -> str:
        """One line for logs and diagnostics: what is running, with which weights."""
        return self.name

    def close(self) -> None:
        """Releases resources (engines, threads)."""
