"""Barge-in: the robot's audio goes silent within 80 ms of the VAD onset of the user's speech."""
import numpy as np
import pytest

from facebot.audio.espeak import EspeakVoice
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.pipeline.duplex import DuplexLoop
from facebot.pipeline.scripted import ScriptedBackend
from facebot.config.scripted import ScriptedConfig

LONG_REPLY = "I am going to talk for quite a long time now, so that you have plenty of chances to interrupt me."


def run(user: np.ndarray, backend):
    loop = DuplexLoop(backend, seed=0)
    results = []
    for k in range(len(user) // FRAME_SAMPLES):
        frame = AudioFrame(user[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], k * FRAME_NS, k)
        results.append(loop.step(frame))
    # The robot's timeline: output frame k is heard right after input frame k was captured.
    robot = np.concatenate([np.zeros(FRAME_SAMPLES, np.float32)] + [r.robot_audio for r in results])
    return results, robot


@pytest.fixture(scope="module")
def user_voice():
    return EspeakVoice(voice="en-us+m3", rate_wpm=155)


@pytest.mark.parametrize("interrupt_after_s", [1.0, 1.53, 2.07, 2.61])  # different phases within a frame
def test_robot_goes_silent_within_one_frame_of_vad_onset(user_voice, interrupt_after_s):
    backend = ScriptedBackend(ScriptedConfig(replies=(LONG_REPLY,)))
    question = user_voice.synthesize("Hello robot, please tell me something.").audio
    interruption = user_voice.synthesize("Wait, please stop talking.").audio
    user = np.zeros(int(12 * MODEL_RATE), np.float32)
    start = int(0.4 * MODEL_RATE)
    user[start:start + len(question)] = question
    # The reply starts after the end-of-turn silence; interrupt it part-way through.
    reply_start = (start + len(question)) / MODEL_RATE + 0.8 + 0.3
    at = int((reply_start + interrupt_after_s) * MODEL_RATE)
    user[at:at + len(interruption)] = interruption

    results, robot = run(user, backend)
    barge = [r for r in results if r.output.barge_in]
    assert len(barge) == 1, "exactly one barge-in"
    onset = barge[0].user.onset_sample
    assert onset is not None and at <= onset <= at + len(interruption)  # decided during the interruption
    assert np.abs(robot[onset - int(0.2 * MODEL_RATE):onset]).max() > 0.05, "the robot was speaking"
    within = onset + int(0.080 * MODEL_RATE)
    assert np.abs(robot[within:within + int(0.5 * MODEL_RATE)]).max() < 1e-4
    assert backend.replies_interrupted == 1


def test_no_barge_in_without_user_speech(user_voice):
    backend = ScriptedBackend(ScriptedConfig(replies=(LONG_REPLY,)))
    question = user_voice.synthesize("Hello robot, please tell me something.").audio
    user = np.zeros(int(10 * MODEL_RATE), np.float32)
    user[4800:4800 + len(question)] = question
    user += np.random.default_rng(0).normal(0, 0.002, user.shape).astype(np.float32)  # room noise
    results, robot = run(user, backend)
    assert not any(r.output.barge_in for r in results)
    assert backend.replies_started == 1 and backend.replies_interrupted == 0
    assert sum(r.output.speaking for r in results) * 0.08 > 3.0  # the reply played out
