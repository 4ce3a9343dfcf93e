"""Audio contract: any rate, channel count, format and chunk size -> 24 kHz mono 1920-sample frames."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from facebot.audio import pcm
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFramer

T0 = 1_700_000_000_000_000_000


def tone(rate, seconds, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def frame_all(x, rate, chunk, t0=T0):
    framer = AudioFramer()
    frames = []
    for start in range(0, len(x), chunk):
        frames += framer.push(x[start:start + chunk], rate, t0 + start * 1_000_000_000 // rate)
    return frames + framer.flush(), framer


@pytest.mark.parametrize("encoding", pcm.ENCODINGS)
def test_pcm_round_trip(encoding):
    x = np.linspace(-0.99, 0.99, 1001).astype(np.float32).reshape(-1, 1)
    y = pcm.decode(pcm.encode(x, encoding), encoding, 1)
    step = {"S16LE": 1 / 32768, "S32LE": 1e-7, "F32LE": 0, "U8": 1 / 128}[encoding]
    assert np.max(np.abs(x - y)) <= step / 2 + 1e-7


def test_pcm_clips_instead_of_wrapping_and_rejects_bad_data():
    out = pcm.decode(pcm.encode(np.array([2.0, -3.0]), "S16LE"), "S16LE", 1)[:, 0]
    assert out[0] > 0.99 and out[1] == -1.0
    with pytest.raises(ValueError, match="non-finite"):
        pcm.encode(np.array([np.nan]), "S16LE")
    with pytest.raises(ValueError, match="not a multiple"):
        pcm.decode(b"\x00\x01\x02", "S16LE", 1)
    with pytest.raises(ValueError, match="unknown audio encoding"):
        pcm.decode(b"", "MP3", 1)
    with pytest.raises(ValueError, match="at least 1"):
        pcm.decode(b"", "S16LE", 0)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("chunk_ms", [3, 20, 100])
def test_any_rate_and_chunk_gives_exact_timeline(rate, chunk_ms):
    seconds = 1.0
    x = tone(rate, seconds)
    frames, framer = frame_all(x, rate, max(1, rate * chunk_ms // 1000))
    expected = -(-int(seconds * MODEL_RATE) // FRAME_SAMPLES)
    assert len(frames) == expected
    assert [f.index for f in frames] == list(range(expected))
    assert all(f.samples.shape == (FRAME_SAMPLES,) and f.samples.dtype == np.float32 for f in frames)
    assert [f.stamp_ns - T0 for f in frames] == [i * FRAME_NS for i in range(expected)]
    y = np.concatenate([f.samples for f in frames])[: int(seconds * MODEL_RATE)]
    ref = tone(MODEL_RATE, seconds)
    inner = slice(2400, len(ref) - 2400)  # away from the resampler's edges
    assert np.max(np.abs(y[inner] - ref[inner])) < 2e-3
    assert framer.stats.gaps_filled == 0 and framer.stats.restarts == 0


def test_stereo_and_formats_become_the_same_mono():
    x = tone(48000, 0.5, channels=2)
    x[:, 1] *= 0.5  # different channels are averaged
    ref, _ = frame_all(x.mean(axis=1), 48000, 960)
    for enc in ("S16LE", "S32LE", "F32LE"):
        decoded = pcm.decode(pcm.encode(x, enc), enc, 2)
        got, _ = frame_all(decoded, 48000, 960)
        assert np.max(np.abs(np.concatenate([f.samples for f in got]) - np.concatenate([f.samples for f in ref]))) < 1e-3


def test_gap_in_stamps_is_filled_with_silence_and_counted():
    rate = 16000
    x = tone(rate, 1.0)
    framer = AudioFramer()
    frames = framer.push(x[:8000], rate, T0)
    frames += framer.push(x[8000:], rate, T0 + 500_000_000 + 200_000_000)  # 200 ms lost upstream
    frames += framer.flush()
    assert framer.stats.gaps_filled == 1
    assert len(frames) == -(-int(1.2 * MODEL_RATE) // FRAME_SAMPLES)
    y = np.concatenate([f.samples for f in frames])
    assert np.max(np.abs(y[int(0.53 * MODEL_RATE):int(0.67 * MODEL_RATE)])) < 1e-3  # the gap is silent
    assert np.max(np.abs(y[int(0.75 * MODEL_RATE):int(0.8 * MODEL_RATE)])) > 0.4  # audio resumes on time
    assert sum(f.filled_ns for f in frames) >= 200_000_000


def test_rate_change_and_jump_restart_the_timeline():
    framer = AudioFramer()
    frames = framer.push(tone(16000, 0.5), 16000, T0)
    frames += framer.push(tone(48000, 0.5), 48000, T0 + 500_000_000)
    frames += framer.push(tone(48000, 0.5), 48000, T0 + 60_000_000_000)  # a minute later
    frames += framer.flush()
    assert framer.stats.rate_changes == 1 and framer.stats.restarts == 1
    assert frames[-1].stamp_ns >= T0 + 60_000_000_000
    assert all(b.stamp_ns > a.stamp_ns for a, b in zip(frames, frames[1:]))


def test_non_finite_samples_are_zeroed_and_counted():
    x = tone(24000, 0.2)
    x[100:110] = np.nan
    frames, framer = frame_all(x, 24000, 480)
    assert framer.stats.non_finite_samples == 10
    assert all(np.isfinite(f.samples).all() for f in frames)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([8000, 11025, 16000, 24000, 32000, 44100, 48000]),
       st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_arbitrary_chunking_keeps_frame_count_and_stamps(rate, sizes):
    total = sum(sizes)
    x = np.random.default_rng(total).uniform(-0.5, 0.5, total).astype(np.float32)
    framer = AudioFramer()
    frames, pos = [], 0
    for n in sizes:
        frames += framer.push(x[pos:pos + n], rate, T0 + pos * 1_000_000_000 // rate)
        pos += n
    frames += framer.flush()
    out_samples = total * MODEL_RATE // rate
    assert len(frames) == -(-out_samples // FRAME_SAMPLES)
    assert [f.stamp_ns - T0 for f in frames] == [i * FRAME_NS for i in range(len(frames))]
