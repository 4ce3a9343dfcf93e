"""Echo cancellation pieces without the loop: AEC3 wrapper, GCC-PHAT delay, the input stage
(reference placed by stamps, any rate/format, gaps, silence, clipping, a missing or late
reference), and the simulated room."""
import numpy as np
import pytest

from facebot.audio.delay import DelayTracker, gcc_phat

from facebot.config.echo import DelayConfig
from facebot.audio.echo import EchoCanceller, EchoConfig
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.audio.pcm import decode, encode
from facebot.pipeline.echo_stage import EchoInputStage
from facebot.config.echo import EchoStageConfig

T0 = 1_700_000_000_000_000_000
R = MODEL_RATE


TEXTS = ("Hello, I am face bot, a friendly robot. It is nice to meet you.",
         "I can listen and talk at the same time, so you can interrupt me whenever you like.",
         "Thank you for talking with me today. Goodbye, and see you soon.")


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Real speech (espeak-ng), repeated to ``seconds`` (whole frames), seeded voice/text."""
    from facebot.audio.espeak import EspeakVoice

    voice = EspeakVoice(voice=("en-us+f5", "en-us+m3", "en-us+f2")[seed % 3], rate_wpm=150)
    clip = voice.synthesize(TEXTS[seed % len(TEXTS)], sample_rate=R).audio
    n = -(-int(seconds * R) // FRAME_SAMPLES) * FRAME_SAMPLES
    return (0.8 * np.resize(clip, n) / np.abs(clip).max()).astype(np.float32)


def echo_of(far: np.ndarray, delay_ms: float, gain: float = 0.5) -> np.ndarray:
    d = int(delay_ms * R / 1000)
    h = np.zeros(240)
    h[0], h[40], h[130] = 1.0, -0.4, 0.2  # direct path and two reflections
    e = np.convolve(far, h)[: far.shape[0]] * gain
    return np.concatenate([np.zeros(d), e])[: far.shape[0]].astype(np.float32)


def run_stage(stage, mic, far, ref_rate=R, ref_encoding=None):
    """Frames ``mic`` through ``stage``; the reference of frame k is the same span of ``far``,
    delivered at ``ref_rate`` (stream-resampled once) and through ``ref_encoding``."""
    import soxr

    ref_all = far if ref_rate == R else soxr.resample(far, R, ref_rate)
    out = []
    for k in range(mic.shape[0] // FRAME_SAMPLES):
        sl = slice(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
        t = T0 + k * FRAME_NS
        ref = ref_all[k * FRAME_SAMPLES * ref_rate // R:(k + 1) * FRAME_SAMPLES * ref_rate // R]
        if ref_encoding:
            ref = decode(encode(np.stack([ref, ref], 1), ref_encoding), ref_encoding, 2)
        stage.add_reference(ref, ref_rate, t)
        out.append(stage.process(AudioFrame(mic[sl], t, k)).samples)
    return np.concatenate(out)


def erle(mic, out, start_s=1.0):
    a = int(start_s * R)
    return 10 * np.log10(np.sum(mic[a:] ** 2) / max(np.sum(out[a:] ** 2), 1e-20))


def test_gcc_phat_finds_a_delay_and_its_sign():
    far = speechlike(2.0)
    for true_ms in (37.5, -20.0):
        d = int(true_ms * 8)
        ref = np.concatenate([np.zeros(800), far[::3][:16000], np.zeros(800)]).astype(np.float32)  # 8 kHz
        mic = np.roll(ref, d)[800:800 + 12000]
        lag, ratio = gcc_phat(mic, ref[800 - 800:800 + 12000 + 400], 8000, (-400, 800))
        assert abs(lag - d) <= 1 and ratio > 7


def test_tracker_needs_agreement_and_reference():
    t = DelayTracker(DelayConfig(), initial_ms=0.0)
    silent = np.zeros(int(1.5 * R), np.float32)
    assert t.update(silent, np.zeros(int(2.7 * R), np.float32), R) is None and t.estimates == 0
    far = speechlike(4.0)
    changed = []
    for i in range(3):
        seg = far[i * 4000:]
        ref = np.concatenate([np.zeros(R), seg])[: int(2.7 * R)]  # starts 1 s before the window
        mic = np.concatenate([np.zeros(int(0.12 * R)), seg])[: int(1.5 * R)]  # echo 120 ms later
        changed.append(t.update(mic, ref, R))
    assert changed[0] is None  # one estimate is not enough
    assert abs(t.delay_ms - 120.0) < 1.0 and t.confirmed


def test_aec_cancels_an_echo_and_leaves_the_user():
    far, user = speechlike(5.0, 1), speechlike(5.0, 2) * 0.5
    user[: int(3.0 * R)] = 0.0  # user talks in the last 2 s only (double talk)
    mic = echo_of(far, 60.0) + user
    stage = EchoInputStage(EchoStageConfig(noise_suppression=False))
    out = run_stage(stage, mic, far)
    echo_only = slice(int(1.0 * R), int(3.0 * R))
    assert erle(mic[echo_only], out[echo_only], 0) > 25.0
    dt = slice(int(3.5 * R), int(5.0 * R))
    # the user's part survives double talk (AEC3 attenuates some of it, not all)
    kept_db = 10 * np.log10(np.sum(out[dt] ** 2) / np.sum(user[dt] ** 2))
    print("double talk: user kept at", round(kept_db, 1), "dB")
    assert kept_db > -10.0
    assert abs(stage.delay_ms - 60.0) < 2.0
    s = stage.stats()
    assert s["reference"] == "ok" and s["reference_missing_frames"] == 0 and s["erle_db"] is not None


def test_delay_beyond_aec3s_reach_is_found_and_shifted():
    far = speechlike(8.0, 3)
    mic = echo_of(far, 700.0)
    tracked = run_stage(EchoInputStage(EchoStageConfig(noise_suppression=False)), mic, far)
    fixed = run_stage(EchoInputStage(EchoStageConfig(noise_suppression=False, track_delay=False)), mic, far)
    assert erle(mic, tracked, 4.0) > 25.0
    assert erle(mic, fixed, 4.0) < erle(mic, tracked, 4.0) - 15.0  # without tracking AEC3 cannot


@pytest.mark.parametrize("rate,encoding", [(48000, "S16LE"), (16000, "F32LE"), (44100, "U8")])
def test_reference_at_another_rate_and_format_is_converted(rate, encoding):
    far = speechlike(4.0, 4)
    mic = echo_of(far, 40.0)
    out = run_stage(EchoInputStage(EchoStageConfig(noise_suppression=False)), mic, far,
                    ref_rate=rate, ref_encoding=encoding)
    # a 16 kHz reference lacks the echo's band above 8 kHz, which then stays uncancelled
    assert erle(mic, out, 1.5) > (12.0 if rate < R else 15.0)


def test_missing_and_late_reference_pass_audio_through_and_are_counted():
    far = speechlike(3.0, 5)
    mic = echo_of(far, 40.0)
    stage = EchoInputStage()
    frames = [AudioFrame(mic[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], T0 + k * FRAME_NS, k)
              for k in range(mic.shape[0] // FRAME_SAMPLES)]
    outs = [stage.process(f).samples for f in frames]  # no reference at all
    assert all(o.shape == (FRAME_SAMPLES,) and np.isfinite(o).all() for o in outs)
    assert stage.stats()["reference_missing_frames"] == len(frames)
    assert stage.reference_status == "no reference received"
    for k in range(6):  # arrives after its echo was processed
        stage.add_reference(far[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], R, T0 + k * FRAME_NS)
    assert stage.stats()["reference_late_chunks"] == 6
    assert stage.reference_status.startswith("reference late")
    stage.add_reference(far[:FRAME_SAMPLES], R, T0 + 60 * FRAME_NS)  # on time again, but none for now
    for k in range(40, 46):
        stage.process(AudioFrame(mic[:FRAME_SAMPLES], T0 + k * FRAME_NS, k))
    assert stage.reference_status.startswith("reference missing")


def test_frames_are_marked_echo_suppressed_once_aec3_settled_while_the_reference_is_active_and_a_hold_after():
    far = speechlike(1.6, 2)
    far[FRAME_SAMPLES * 10:] = 0.0  # the robot talks for 0.8 s, then is silent
    mic = echo_of(far, 40.0)

    def marks(config):
        stage, out = EchoInputStage(config), []
        for k in range(mic.shape[0] // FRAME_SAMPLES):
            sl = slice(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
            stage.add_reference(far[sl], R, T0 + k * FRAME_NS)
            frame = stage.process(AudioFrame(mic[sl], T0 + k * FRAME_NS, k))
            assert frame.vad_samples.shape == frame.samples.shape  # before noise suppression: the VAD's
            out.append(frame.echo_suppressed)
        return out

    # the reference is read at the frames' own stamps (default guess): active in frames 0-9,
    # then held for 400 ms = 5 frames
    at_once = marks(EchoStageConfig(suppression_hold_ms=400.0, suppression_settle_s=0.0))
    assert at_once[:15] == [True] * 15 and not any(at_once[15:])
    # by default only after AEC3 had 1 s of reference: never within these 0.8 s
    settling = marks(EchoStageConfig(suppression_hold_ms=400.0))
    assert not any(settling)
    half = marks(EchoStageConfig(suppression_hold_ms=400.0, suppression_settle_s=0.4))
    first = half.index(True)
    assert 4 <= first < 10 and all(half[first:15]) and not any(half[15:])
    off = EchoInputStage(EchoStageConfig(echo_cancellation=False, suppression_settle_s=0.0))
    off.add_reference(far[:FRAME_SAMPLES], R, T0)
    assert not off.process(AudioFrame(mic[:FRAME_SAMPLES], T0, 0)).echo_suppressed
    missing = EchoInputStage(EchoStageConfig(suppression_settle_s=0.0))  # no reference: the echo passes
    assert not missing.process(AudioFrame(mic[:FRAME_SAMPLES], T0, 0)).echo_suppressed


def test_bad_input_is_refused_or_handled_never_raised():
    stage = EchoInputStage()
    assert not stage.add_reference(np.zeros(0, np.float32), R, T0)
    assert not stage.add_reference(np.zeros((4, 4, 4), np.float32), R, T0)
    assert not stage.add_reference(np.ones(100, np.float32), 0, T0)
    assert stage.stats()["reference_refused"] == 3
    nasty = np.full(FRAME_SAMPLES, np.nan, np.float32)
    assert stage.add_reference(nasty, R, T0)  # non-finite samples are zeroed by the framer
    clipped = np.sign(speechlike(0.08, 6)) * 1.5
    out = stage.process(AudioFrame(clipped.astype(np.float32), T0, 0)).samples
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    silence = stage.process(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), T0 + FRAME_NS, 1)).samples
    assert np.isfinite(silence).all() and np.abs(silence).max() <= 1.0
    # a gap in the reference stream (2 s) and stamps jumping back do not break anything
    stage.add_reference(np.zeros(FRAME_SAMPLES, np.float32), R, T0 + 30 * FRAME_NS)
    stage.add_reference(np.zeros(FRAME_SAMPLES, np.float32), R, T0 - 50 * FRAME_NS)
    stage.process(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), T0 + 2 * FRAME_NS, 2))
    with pytest.raises(ValueError):
        EchoStageConfig(echo_delay_ms=5000.0)


def test_features_switch_live():
    far = speechlike(3.0, 7)
    mic = echo_of(far, 30.0)
    stage = EchoInputStage(EchoStageConfig(noise_suppression=False))
    out = run_stage(stage, mic, far)
    assert erle(mic, out, 1.0) > 25
    stage.configure(echo_cancellation=False, noise_suppression=False, high_pass_filter=False)
    f = AudioFrame(mic[:FRAME_SAMPLES], T0 + 100 * FRAME_NS, 100)
    assert np.array_equal(stage.process(f).samples, mic[:FRAME_SAMPLES])  # all off: untouched
    assert stage.stats()["reference"] == "off"
    stage.configure(echo_cancellation=True, echo_delay_ms=100.0)
    assert stage.delay_ms == 100.0
    with pytest.raises(ValueError):
        stage.configure(gain=3)


def test_canceller_rejects_misframed_audio():
    c = EchoCanceller(EchoConfig())
    with pytest.raises(ValueError):
        c.process(np.zeros(100, np.float32), np.zeros(100, np.float32), 0)


def test_room_is_seeded_causal_and_keeps_its_parts_apart():
    from facebot.audio.room import EchoRoom, EchoRoomConfig

    a, b = EchoRoom(EchoRoomConfig(seed=3)), EchoRoom(EchoRoomConfig(seed=3))
    assert a.describe() == b.describe() and EchoRoom(EchoRoomConfig(seed=4)).describe() != a.describe()
    far = speechlike(0.08, 8)
    first = a.capture(np.zeros(FRAME_SAMPLES, np.float32), T0)
    assert np.abs(first).max() < 0.01  # only noise: nothing was played yet
    a.play(far, T0 + FRAME_NS)  # heard from the next frame on, plus the hardware delay
    m1 = a.capture(np.zeros(FRAME_SAMPLES, np.float32), T0 + FRAME_NS)
    d = int(a.delay_ms * R / 1000)
    assert np.abs(a.last_echo[: max(0, d - 5)]).max(initial=0.0) == 0.0
    m2 = a.capture(np.zeros(FRAME_SAMPLES, np.float32), T0 + 2 * FRAME_NS)
    assert np.abs(np.concatenate([m1, m2])).max() > 0.01  # the echo arrived
    assert np.allclose(m2, np.clip(a.last_echo + a.last_user + (m2 - a.last_echo - a.last_user), -1, 1))
