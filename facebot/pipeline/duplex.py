"""The duplex loop: one 80 ms step hears the user, speaks, and moves the face.

Per step: voice activity on the user's frame, one backend step, two face frames (the
backend's own, or procedural ones from the robot's voice and the user's activity), and
time stamps that say when the output is meant to be heard and shown (DESIGN.md, Time):
output frame k can only be computed once input frame k has been captured, so it is heard
from ``capture_stamp(k) + 80 ms + playout_delay``.
"""
from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field

import numpy as np

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.audio.vad import SileroVad, VoiceActivity
from facebot.face.cues import FaceCue
from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame
from facebot.face.procedural import ProceduralFace, ProceduralFaceConfig
from facebot.pipeline.backend import DuplexInput, DuplexOutput, SpeechBackend, UserActivity


class DialogueStateKind(enum.IntEnum):
    """Matches the STATE_* constants of msg/DialogueState.msg."""

    IDLE = 0
    LISTENING = 1
    SPEAKING = 2
    OVERLAP = 3


@dataclass
class LoopConfig:
    # Time from the end of an input frame's capture to its output being heard: compute,
    # output buffering and the sound card. Live runs measure it; file runs use this value.
    playout_delay_ms: float = 0.0
    vad_threshold: float = 0.5
    face: ProceduralFaceConfig = field(default_factory=ProceduralFaceConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.playout_delay_ms <= 2000.0:
            raise ValueError(f"loop: playout_delay_ms must be within [0, 2000], got {self.playout_delay_ms}")
        if not 0.0 < self.vad_threshold < 1.0:
            raise ValueError(f"loop: vad_threshold must be within (0, 1), got {self.vad_threshold}")
        if isinstance(self.face, dict):
            self.face = ProceduralFaceConfig(**self.face)


@dataclass
class StepResult:
    index: int
    capture_stamp_ns: int  # when the user audio of this step was captured
    audio_stamp_ns: int  # when robot_audio[0] is meant to be heard
    user_audio: np.ndarray
    robot_audio: np.ndarray
    flame: list[FlameFrame]  # two frames, stamped at audio_stamp and +40 ms
    output: DuplexOutput
    user: UserActivity
    state: DialogueStateKind
    timings_ms: dict[str, float]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class DuplexLoop:
    """Steps a speech backend on 80 ms frames and produces stamped audio and face output."""

    def __init__(self, backend: SpeechBackend, config: LoopConfig | None = None, seed: int = 0) -> None:
        self.backend = backend
        self.config = config or LoopConfig()
        self.vad = SileroVad(sample_rate=MODEL_RATE)
        self.seed = seed
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        self.vad.reset()
        self.activity = VoiceActivity(threshold=self.config.vad_threshold)
        self.face = ProceduralFace(self._face_config())
        self.backend.reset(self.seed)
        self._index = 0

    def _face_config(self) -> ProceduralFaceConfig:
        return dataclasses.replace(self.config.face, seed=self.seed)

    def step(self, frame: AudioFrame, user_image: np.ndarray | None = None, playout_delay_ns: int | None = None) -> StepResult:
        t_step = time.perf_counter()
        samples = np.asarray(frame.samples, np.float32)
        if samples.shape != (FRAME_SAMPLES,):
            raise ValueError(f"duplex step needs {FRAME_SAMPLES} samples, got shape {samples.shape}")
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        user = self._user_activity(samples)
        timings["vad"] = _ms(t0)

        t0 = time.perf_counter()
        out = self.backend.step(
            DuplexInput(self._index, samples, frame.stamp_ns, user=user, user_image=user_image)
        )
        timings["backend"] = _ms(t0)

        t0 = time.perf_counter()
        if playout_delay_ns is None:
            playout_delay_ns = int(self.config.playout_delay_ms * 1e6)
        audio_stamp = frame.stamp_ns + FRAME_NS + playout_delay_ns
        flame = self._face(out, user)
        for j, f in enumerate(flame):
            f.stamp_ns = audio_stamp + j * FRAME_PERIOD_NS
            f.sequence = 2 * self._index + j
        timings["face"] = _ms(t0)
        timings["step"] = _ms(t_step)

        result = StepResult(
            index=self._index,
            capture_stamp_ns=frame.stamp_ns,
            audio_stamp_ns=audio_stamp,
            user_audio=samples,
            robot_audio=out.audio,
            flame=flame,
            output=out,
            user=user,
            state=self._state(out, user),
            timings_ms=timings,
        )
        self._index += 1
        return result

    def _user_activity(self, samples: np.ndarray) -> UserActivity:
        chunks = self.vad.process(samples)
        onset_decided = None
        offset = False
        for chunk in chunks:  # one at a time, to know where each decision was taken
            for event in self.activity.update([chunk]):
                if event.kind == "onset":
                    onset_decided = chunk.end_sample
                else:
                    offset = True
        return UserActivity(
            speaking=self.activity.speaking,
            speech_prob=max((c.prob for c in chunks), default=0.0),
            onset=onset_decided is not None,
            onset_sample=onset_decided,
            offset=offset,
            silence_ms=0.0 if self.activity.speaking else float(self.activity.silence_ms),
            turn_speech_ms=float(self.activity.speech_ms),
        )

    def _face(self, out: DuplexOutput, user: UserActivity) -> list[FlameFrame]:
        if out.flame is not None and len(out.flame) == 2 and all(f.is_finite() for f in out.flame):
            self.face.step(self._cue(out, user))  # keep the fallback's state warm
            return [FlameFrame(**{k: getattr(f, k) for k in ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids")}, source=f.source) for f in out.flame]
        return list(self.face.step(self._cue(out, user)))

    @staticmethod
    def _cue(out: DuplexOutput, user: UserActivity) -> FaceCue:
        return FaceCue(
            robot_audio=out.audio,
            phonemes=out.phonemes,
            robot_speaking=out.speaking or out.backchannel,
            user_speaking=user.speaking,
            user_speech_prob=user.speech_prob,
            user_pause=out.user_pause,
            backchannel=out.backchannel,
            barge_in=out.barge_in,
        )

    @staticmethod
    def _state(out: DuplexOutput, user: UserActivity) -> DialogueStateKind:
        robot = out.speaking or out.backchannel
        if robot and user.speaking:
            return DialogueStateKind.OVERLAP
        if robot:
            return DialogueStateKind.SPEAKING
        if user.speaking:
            return DialogueStateKind.LISTENING
        return DialogueStateKind.IDLE
