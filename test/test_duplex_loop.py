"""The duplex loop's contracts: time stamps, the backend seam, and robustness to a bad backend."""
import numpy as np
import pytest

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, AudioFrame
from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame, FrameSource
from facebot.pipeline.backend import DuplexOutput, SpeechBackend
from facebot.pipeline.duplex import DialogueStateKind, DuplexLoop
from facebot.config.loop import LoopConfig

T0 = 1_000_000_000_000


class EchoBackend(SpeechBackend):
    """Returns the user's audio scaled, optionally with its own face or garbage."""

    name = "echo"

    def __init__(self, face=False, garbage=False):
        self.face, self.garbage = face, garbage

    def reset(self, seed=0):
        self.seen = []

    def step(self, inp):
        self.seen.append(inp)
        audio = inp.user_audio * 0.5
        if self.garbage:
            audio = np.full(FRAME_SAMPLES, np.nan, np.float32)
            audio[:10] = np.inf
        flame = None
        if self.face:
            flame = [FlameFrame(jaw_pose=[0.1 * (j + 1), 0, 0], source=FrameSource.MODEL) for j in range(2)]
        return DuplexOutput(audio=audio, speaking=True, flame=flame, text="hi")


def frame(k, value=0.0):
    return AudioFrame(np.full(FRAME_SAMPLES, value, np.float32), T0 + k * FRAME_NS, k)


def test_output_is_stamped_with_its_playout_time_and_face_with_the_audio():
    loop = DuplexLoop(EchoBackend(), LoopConfig(playout_delay_ms=30.0))
    for k in range(3):
        r = loop.step(frame(k))
        assert r.capture_stamp_ns == T0 + k * FRAME_NS
        assert r.audio_stamp_ns == r.capture_stamp_ns + FRAME_NS + 30_000_000
        assert [f.stamp_ns for f in r.flame] == [r.audio_stamp_ns, r.audio_stamp_ns + FRAME_PERIOD_NS]
        assert [f.sequence for f in r.flame] == [2 * k, 2 * k + 1]
    live = loop.step(frame(3), playout_delay_ns=55_000_000)  # a live run passes the speaker's delay
    assert live.audio_stamp_ns == T0 + 4 * FRAME_NS + 55_000_000


def test_backend_gets_index_stamp_activity_and_image():
    backend = EchoBackend()
    loop = DuplexLoop(backend)
    image = np.zeros((4, 4, 3), np.uint8)
    loop.step(frame(0), user_image=image)
    inp = backend.seen[0]
    assert inp.index == 0 and inp.capture_stamp_ns == T0 and inp.user_image is image
    assert not inp.user.speaking and 0.0 <= inp.user.speech_prob <= 1.0


def test_backend_face_is_used_when_given_and_procedural_otherwise():
    r = DuplexLoop(EchoBackend(face=True)).step(frame(0))
    assert [f.source for f in r.flame] == [FrameSource.MODEL, FrameSource.MODEL]
    assert r.flame[1].jaw_pose[0] == pytest.approx(0.2)
    r = DuplexLoop(EchoBackend(face=False)).step(frame(0))
    assert [f.source for f in r.flame] == [FrameSource.PROCEDURAL] * 2
    assert r.state == DialogueStateKind.SPEAKING


def test_nan_from_a_backend_never_reaches_the_output():
    r = DuplexLoop(EchoBackend(garbage=True)).step(frame(0))
    assert np.isfinite(r.robot_audio).all() and np.abs(r.robot_audio).max() <= 1.0
    assert all(f.is_finite() for f in r.flame)


def test_wrong_frame_size_is_refused():
    loop = DuplexLoop(EchoBackend())
    with pytest.raises(ValueError, match="1920"):
        loop.step(AudioFrame(np.zeros(100, np.float32), T0, 0))
    with pytest.raises(ValueError, match="1920 samples"):
        DuplexOutput(audio=np.zeros(10))


def test_the_vad_hears_the_frames_vad_samples_when_given():
    from facebot.audio.espeak import EspeakVoice
    from facebot.audio.framing import MODEL_RATE

    speech = EspeakVoice(voice="en-us+m3", rate_wpm=155).synthesize(
        "Hello robot, please tell me something.", sample_rate=MODEL_RATE).audio
    n = len(speech) // FRAME_SAMPLES
    loop = DuplexLoop(EchoBackend())
    heard = [loop.step(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), T0 + k * FRAME_NS, k,
                                  vad_samples=speech[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])).user
             for k in range(n)]
    assert any(u.speaking for u in heard)  # the backend got silence, the VAD the speech
    assert not any(np.any(inp.user_audio) for inp in loop.backend.seen)
    with pytest.raises(ValueError, match="VAD samples"):
        loop.step(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), T0, 0, vad_samples=np.zeros(10, np.float32)))


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.9])
def test_any_allowed_vad_threshold_makes_a_loop_that_hears_speech_only_above_it(threshold):
    # vad_threshold below 0.35 once refused to build (the fixed neg_threshold was above it)
    loop = DuplexLoop(EchoBackend(), LoopConfig(vad_threshold=threshold, vad_echo_threshold=0.4))
    c = loop.activity.config
    assert c.threshold == threshold and c.neg_threshold <= threshold
    assert c.echo_start_threshold == min(threshold, 0.4)
    assert not loop.step(frame(0)).user.speaking
