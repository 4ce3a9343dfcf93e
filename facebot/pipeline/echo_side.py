"""The microphone side of a loop with a loudspeaker, shared by `facebot run`, the bench and
the tests: the simulated room (if any) adds the robot's echo to each input frame, the echo
stage (if any) removes it, and both are told what the robot played, stamped with when it is
heard. ``run_frames`` drives a loop over a whole recording this way (no output folder)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.pipeline.duplex import DuplexLoop, StepResult
from facebot.pipeline.echo_metrics import EchoTrace, echo_metrics

__all__ = ["EchoSide", "EchoTrace", "run_frames"]


class EchoSide:
    """The microphone side of a session with a loudspeaker: the simulated room (if any) adds
    the robot's echo to each frame, the echo stage (if any) removes it; both are told what
    the robot played, stamped with when it is heard."""

    def __init__(self, stage=None, room=None, trace: EchoTrace | None = None, mic_sink=None) -> None:
        """``mic_sink`` (samples -> None) is handed each microphone frame as heard, before the
        echo stage (a session writes it to mic.wav as it goes)."""
        self.stage, self.room, self.trace = stage, room, trace
        self.mic_sink = mic_sink
        self.stage_ms: list[float] = []  # the echo stage's time per 80 ms frame
        self._last_mic = None
        self._last_suppressed = False

    def before_step(self, frame: AudioFrame) -> tuple[AudioFrame, float | None]:
        if self.room is not None:
            frame = dataclasses.replace(frame, samples=self.room.capture(frame.samples, frame.stamp_ns))
        if self.stage is None and self.room is None:
            return frame, None
        self._last_mic = frame.samples
        if self.mic_sink is not None:
            self.mic_sink(frame.samples)
        if self.stage is None:
            return frame, None
        t0 = time.perf_counter()
        cleaned = self.stage.process(frame)
        ms = (time.perf_counter() - t0) * 1000.0
        self._last_suppressed = cleaned.echo_suppressed
        self.stage_ms.append(ms)
        return cleaned, ms

    def after_step(self, result: StepResult) -> None:
        if self.room is not None:
            self.room.play(result.robot_audio, result.audio_stamp_ns)
        if self.stage is not None:
            self.stage.add_reference(result.robot_audio, MODEL_RATE, result.audio_stamp_ns)
        if self.trace is not None:
            barge = result.user.onset_sample if result.output.barge_in else None
            self.trace.add(self._last_mic, result.user_audio, self.room.last_echo, self.room.last_user,
                           result.robot_audio, barge, result.user.speech_prob, self._last_suppressed)

    def summary(self) -> dict:
        out: dict = {}
        if self.stage is not None:
            out.update(self.stage.stats())
        else:
            out["echo_cancellation"] = False
        if self.room is not None:
            out["room"] = self.room.describe()
            out["true_delay_ms"] = round(self.room.echo_delay_ms, 2)
            out["achieved"] = echo_metrics(self.trace)
            out["mic_clipped_samples"] = self.room.clipped_samples
        return out


def run_frames(loop: DuplexLoop, user: np.ndarray, side: EchoSide, t0_ns: int = 0,
               playout_delay_ns: int | None = None) -> list[StepResult]:
    """Steps ``loop`` over ``user`` (24 kHz mono) frame by frame through ``side``."""
    results = []
    for k in range(user.shape[0] // FRAME_SAMPLES):
        frame = AudioFrame(np.asarray(user[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], np.float32),
                           t0_ns + k * FRAME_NS, k)
        frame, _ = side.before_step(frame)
        result = loop.step(frame, playout_delay_ns=playout_delay_ns)
        side.after_step(result)
        results.append(result)
    return results


ROBOT_LONG_REPLY = ("I am going to talk for quite a long time now, so that you have plenty of chances to "
                    "interrupt me, and so that the echo canceller has a lot of my voice to work on.")
USER_QUESTION = "Hello robot, please tell me something."
# en-us+f2 at 130 wpm: a voice other than the robot's that pocketsphinx transcribes exactly
USER_VOICE = ("en-us+f2", 130)
USER_INTERRUPTION = "Hey, stop talking please, I want to ask you something."


@dataclasses.dataclass
class EchoScenario:
    """The user's side of a test conversation with an open loudspeaker: a question, the
    robot's long reply heard out in silence (robot-only talk), a second question, and an
    interruption part-way through the second reply (double talk)."""

    user: np.ndarray
    interruption_s: tuple[float, float]  # when the interruption clip plays (dry, before the room)
    robot_only_s: tuple[float, float]  # the span of the first reply, if heard out
    # The interruption's speech onset: its first 10 ms whose level is within 20 dB of the
    # clip's loudest 10 ms (the clip starts with silence and a faint /s/).
    speech_onset_s: float = 0.0


def speech_onset(clip: np.ndarray, rate: int = MODEL_RATE, below_peak_db: float = 20.0) -> float:
    """Seconds from the clip's start to its first 10 ms within ``below_peak_db`` of its peak."""
    block = rate // 100
    n = clip.shape[0] // block
    rms = np.sqrt(np.mean(clip[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    return float(np.argmax(rms >= rms.max() * 10 ** (-below_peak_db / 20.0)) * block / rate)


def echo_scenario(seed: int = 0, interrupt_after_s: float | None = None) -> EchoScenario:
    """Seeded timing: the interruption comes 1.5-3.5 s into the second reply.

    espeak-ng's output depends slightly on what the process synthesised before, so call this
    first (or in a fresh process) where the exact audio matters."""
    from facebot.audio.espeak import EspeakVoice
    from facebot.config.scripted import ScriptedConfig

    rng = np.random.default_rng(seed)
    robot = ScriptedConfig()
    reply_s = EspeakVoice(voice=robot.voice, rate_wpm=robot.rate_wpm, pitch=robot.pitch).synthesize(
        ROBOT_LONG_REPLY, sample_rate=MODEL_RATE).duration_s
    voice = EspeakVoice(voice=USER_VOICE[0], rate_wpm=USER_VOICE[1])
    question = voice.synthesize(USER_QUESTION, sample_rate=MODEL_RATE).audio
    interruption = voice.synthesize(USER_INTERRUPTION, sample_rate=MODEL_RATE).audio
    reply_delay = robot.turns.end_of_turn_ms / 1000.0 + 0.3
    q1 = 0.5
    reply1 = q1 + question.shape[0] / MODEL_RATE + reply_delay
    q2 = reply1 + reply_s + 1.5
    reply2 = q2 + question.shape[0] / MODEL_RATE + reply_delay
    after = float(rng.uniform(1.5, 3.5)) if interrupt_after_s is None else interrupt_after_s
    at = reply2 + after
    total = at + interruption.shape[0] / MODEL_RATE + 4.0
    user = np.zeros(int(total * MODEL_RATE), np.float32)
    for start, clip in ((q1, question), (q2, question), (at, interruption)):
        i = int(start * MODEL_RATE)
        user[i:i + clip.shape[0]] += clip
    return EchoScenario(user, (at, at + interruption.shape[0] / MODEL_RATE), (reply1, reply1 + reply_s),
                        at + speech_onset(interruption))
