"""The echo figures from a hand-made trace whose answers are known."""
import numpy as np
import pytest

from facebot.audio.framing import FRAME_SAMPLES, MODEL_RATE
from facebot.pipeline.echo_metrics import EchoTrace, echo_metrics

FRAMES = 100  # 8 s


def trace(user_frames=(60, 61, 62), barge_frames=(), probs=None, suppressed=True) -> EchoTrace:
    """The robot talks all along (echo at -20 dBFS, cancelled to -60); the user speaks in
    ``user_frames``; barge-ins are decided at the start of ``barge_frames``."""
    rng = np.random.default_rng(0)
    t = EchoTrace()
    for k in range(FRAMES):
        echo = (0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32)
        user = np.zeros(FRAME_SAMPLES, np.float32)
        if k in user_frames:
            user = (0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32)
        cleaned = 0.01 * echo + user
        barge = k * FRAME_SAMPLES if k in barge_frames else None
        prob = 0.9 if k in user_frames else (probs[k] if probs is not None else 0.05)
        t.add(echo + user, cleaned, echo, user, echo, barge, prob, suppressed)
    return t


def test_erle_double_talk_latency_and_false_barge_ins():
    m = echo_metrics(trace(barge_frames=(30, 61)))
    assert m["erle_db"] == pytest.approx(40.0, abs=0.5)
    assert m["converged_s"] <= 0.25
    assert m["false_barge_ins"] == 1  # frame 30: the user had been silent
    assert m["barge_in_latency_ms"] == [pytest.approx(80.0)]  # onset at frame 60, decided at 61
    assert m["barge_in_missed"] == 0
    assert echo_metrics(trace())["barge_in_missed"] == 1


def test_echo_leak_is_the_highest_probability_on_robot_only_cleaned_frames():
    probs = np.full(FRAMES, 0.05)
    probs[5] = 0.99  # in the first second after the robot's first word: not yet converged
    probs[58] = 0.98  # within 0.5 s of the user: theirs, not the echo's
    probs[40] = 0.23  # robot only: the leak
    m = echo_metrics(trace(probs=probs))
    assert m["echo_leak_prob"] == pytest.approx(0.23)
    # frames the canceller was not working on do not count
    assert echo_metrics(trace(probs=probs, suppressed=False))["echo_leak_prob"] is None


def test_an_empty_trace_has_no_figures():
    assert echo_metrics(EchoTrace()) == {}
    assert MODEL_RATE // 100 * 8 == FRAME_SAMPLES  # the 10 ms blocks tile a frame
