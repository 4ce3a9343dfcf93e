"""The duplex loop: one 80 ms step hears the user, speaks, and moves the face.

Per step: voice activity on the user's frame, one backend step, two face frames (the
backend's own, or procedural ones from the robot's voice and the user's activity), and
time stamps: an input's stamp is its capture time, an output's is when it is meant to be
heard and shown. Output frame k can only be computed once input frame k has been captured,
so it is heard from ``capture_stamp(k) + 80 ms + playout_delay``.
"""
from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass

import numpy as np

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.audio.vad import SileroVad, VadConfig, VoiceActivity
from facebot.face.cues import FaceCue
from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame
from facebot.config.face import ProceduralFaceConfig
from facebot.config.loop import LoopConfig
from facebot.face.procedural import ProceduralFace
from facebot.pipeline.backend import DuplexInput, DuplexOutput, SpeechBackend, UserActivity


class DialogueStateKind(enum.IntEnum):
    """Matches the STATE_* constants of msg/DialogueState.msg."""

    IDLE = 0
    LISTENING = 1
    SPEAKING = 2
    OVERLAP = 3


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
    # the user's perceived face as the model received it (two frames, or None: no face)
    user_flame: list[FlameFrame] | None = None


# The VAD hears 16 kHz: a user across the room is reverberant, and the 8 kHz model missed the
# first few hundred ms of such speech (facebot.audio.vad).
VAD_MODEL_RATE = 16_000


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class DuplexLoop:
    """Steps a speech backend on 80 ms frames and produces stamped audio and face output."""

    def __init__(self, backend: SpeechBackend, config: LoopConfig | None = None, seed: int = 0,
                 perception=None) -> None:
        self.backend = backend
        # facebot.perception.user_perception.UserPerception, or None: no user face, no gaze target
        self.perception = perception
        self.perception_errors = 0
        self.config = config or LoopConfig()
        self.vad = SileroVad(sample_rate=MODEL_RATE, model_rate=VAD_MODEL_RATE)
        self.seed = seed
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        self.vad.reset()
        self.activity = VoiceActivity.from_config(
            VadConfig.for_threshold(self.config.vad_threshold, self.config.vad_echo_threshold), MODEL_RATE)
        self.face = ProceduralFace(self._face_config())
        self.backend.reset(self.seed)
        if self.perception is not None:
            self.perception.reset()
        self._neck = np.zeros(3, np.float32)  # the robot's neck pose last shown
        self._index = 0

    def _face_config(self) -> ProceduralFaceConfig:
        return dataclasses.replace(self.config.face, seed=self.seed)

    def step(self, frame: AudioFrame, user_image: np.ndarray | None = None, playout_delay_ns: int | None = None,
             user_image_stamp_ns: int | None = None) -> StepResult:
        t_step = time.perf_counter()
        samples = np.asarray(frame.samples, np.float32)
        if samples.shape != (FRAME_SAMPLES,):
            raise ValueError(f"duplex step needs {FRAME_SAMPLES} samples, got shape {samples.shape}")
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        heard = samples if frame.vad_samples is None else np.asarray(frame.vad_samples, np.float32)
        if heard.shape != samples.shape:
            raise ValueError(f"duplex step needs VAD samples shaped like the frame, got {heard.shape}")
        user = self._user_activity(heard, frame.echo_suppressed)
        timings["vad"] = _ms(t0)

        t0 = time.perf_counter()
        user_flame, look = self._perceive(frame, user_image, user_image_stamp_ns, user)
        timings["perception"] = _ms(t0)

        t0 = time.perf_counter()
        out = self.backend.step(
            DuplexInput(self._index, samples, frame.stamp_ns, user=user, user_image=user_image,
                        user_flame=user_flame)
        )
        timings["backend"] = _ms(t0)

        t0 = time.perf_counter()
        if playout_delay_ns is None:
            playout_delay_ns = int(self.config.playout_delay_ms * 1e6)
        audio_stamp = frame.stamp_ns + FRAME_NS + playout_delay_ns
        flame = self._face(out, user, look)
        self._neck = flame[-1].neck_pose.copy()
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
            user_flame=user_flame,
        )
        self._index += 1
        return result

    def _user_activity(self, samples: np.ndarray, echo_suppressed: bool) -> UserActivity:
        chunks = self.vad.process(samples)
        onset_decided = None
        offset = False
        for chunk in chunks:  # one at a time, to know where each decision was taken
            for event in self.activity.update([chunk], echo_suppressed):
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

    def _perceive(self, frame: AudioFrame, image, image_stamp_ns, user: UserActivity):
        """(the user's two frames or None, the gaze target or None) for this step."""
        p = self.perception
        if p is None:
            return None, None
        if image is not None and p.detector is not None:
            try:
                p.observe_image(image, frame.stamp_ns if image_stamp_ns is None else image_stamp_ns,
                                user_speaking=user.speaking)
            except (ValueError, RuntimeError):  # a bad image (counted in p.counts); the step goes on
                self.perception_errors += 1
        return p.for_step(frame.stamp_ns, self._neck)

    def _face(self, out: DuplexOutput, user: UserActivity, look=None) -> list[FlameFrame]:
        if out.flame is not None and len(out.flame) == 2 and all(f.is_finite() for f in out.flame):
            self.face.step(self._cue(out, user, look))  # keep the fallback's state warm
            keys = ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids")
            frames = [FlameFrame(**{k: getattr(f, k) for k in keys}, source=f.source) for f in out.flame]
            return self._attend(frames)
        return list(self.face.step(self._cue(out, user, look)))

    def _attend(self, frames: list[FlameFrame]) -> list[FlameFrame]:
        """The model's face plus ``model_face_attention`` x the procedural face's gaze toward
        the user (neck and eyes), within the procedural face's bounds."""
        from facebot.face.procedural import EYE_LIMIT_RAD, NECK_LIMIT_RAD

        b = self.config.model_face_attention
        if b <= 0:
            return frames
        for f, off in zip(frames, self.face.look_offsets):
            f.neck_pose = np.clip(f.neck_pose + b * off[:3], -NECK_LIMIT_RAD, NECK_LIMIT_RAD).astype(np.float32)
            eyes = f.eye_pose.reshape(2, 3).copy()
            eyes[:, :2] = np.clip(eyes[:, :2] + b * off[3:], -EYE_LIMIT_RAD[:2], EYE_LIMIT_RAD[:2])
            f.eye_pose = eyes.reshape(6).astype(np.float32)
        return frames

    @staticmethod
    def _cue(out: DuplexOutput, user: UserActivity, look=None) -> FaceCue:
        return FaceCue(
            robot_audio=out.audio,
            phonemes=out.phonemes,
            robot_speaking=out.speaking or out.backchannel,
            user_speaking=user.speaking,
            user_speech_prob=user.speech_prob,
            user_pause=out.user_pause,
            backchannel=out.backchannel,
            barge_in=out.barge_in,
            look_at=look,
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
