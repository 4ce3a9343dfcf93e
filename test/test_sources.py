"""Input sources (pipeline/sources.py): a file replayed in chunks stamped as if captured, a
truncated file, video frames served by time, and the real-time pacer. A file is decoded a block
at a time: the same chunks and stamps as the whole file sliced, and a bad one still refused at open."""
import numpy as np
import pytest
import soundfile as sf

from facebot.audio.files import AudioFileError, read_audio
from facebot.pipeline import sources
from facebot.pipeline.sources import FileAudioSource, FrameTimeline, Pacer, SourceError, VideoSource

T0 = 1_700_000_000_000_000_000


def wav(path, samples, rate):
    sf.write(str(path), samples, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("rate,chunk", [(48000, 960), (44100, 882), (22050, 441), (16000, 320)])
def test_chunks_of_20_ms_stamped_by_their_first_sample(tmp_path, rate, chunk):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, rate // 2 + 7).astype(np.float32)  # 0.5 s + 7
    src = FileAudioSource(wav(tmp_path / "a.wav", x, rate), T0)
    chunks = list(src)
    assert src.chunk == chunk and src.duration_s == pytest.approx(len(x) / rate)
    assert [c.samples.shape[0] for c in chunks] == [chunk] * 25 + [7]  # the tail is not dropped
    assert all(c.sample_rate == rate and c.samples.shape[1] == 1 for c in chunks)
    assert [c.stamp_ns for c in chunks] == [T0 + k * 20_000_000 for k in range(26)]
    assert np.array_equal(np.concatenate([c.samples[:, 0] for c in chunks]), x)


def test_stamps_come_from_the_sample_index_not_a_sum_of_rounded_chunk_lengths(tmp_path):
    # 1 ms at 22050 Hz is 22 samples = 997732.43 ns: a running sum of whole ns would drift
    src = FileAudioSource(wav(tmp_path / "a.wav", np.zeros(22050, np.float32), 22050), 5, chunk_ms=1.0)
    stamps = [c.stamp_ns for c in src]
    assert src.chunk == 22 and len(stamps) == 1003
    assert stamps[1] == 5 + 997_732
    assert stamps[1000] == 5 + 22_000 * 10**9 // 22050 == 5 + 997_732_426


def test_stereo_files_keep_their_channels_for_the_framer(tmp_path):
    x = np.stack([np.linspace(-1, 1, 4800), np.zeros(4800)], axis=1).astype(np.float32)
    chunks = list(FileAudioSource(wav(tmp_path / "s.wav", x, 24000), 0))
    assert all(c.samples.shape == (480, 2) for c in chunks)
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), x)


def test_a_truncated_file_is_replayed_as_far_as_it_goes(tmp_path):
    p = tmp_path / "t.wav"
    sf.write(str(p), np.full(24000, 0.25, np.float32), 24000, subtype="PCM_16")
    raw = p.read_bytes()
    p.write_bytes(raw[:44 + 2 * 10_000 + 1])  # header + 10000 samples + half a sample
    src = FileAudioSource(p, T0)
    chunks = list(src)
    assert src.info.frames == 10_000 and "truncated" in src.info.truncated_note
    assert sum(c.samples.shape[0] for c in chunks) == 10_000
    assert chunks[-1].stamp_ns == T0 + 20 * 480 * 10**9 // 24000
    assert np.allclose(np.concatenate([c.samples for c in chunks]), 0.25, atol=1e-4)


def test_an_unreadable_file_is_refused_before_any_chunk(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        FileAudioSource(tmp_path / "missing.wav", T0)


def test_frame_timeline_serves_the_newest_frame_at_or_before_a_time():
    frames = [(np.full(2, k), T0 + k * 40_000_000) for k in range(5)]
    reads = []

    def read():
        reads.append(1)
        return frames[len(reads) - 1] if len(reads) <= len(frames) else None

    tl = FrameTimeline(read)
    assert tl.at(T0 - 1) is None and len(reads) == 1  # nothing captured yet; one frame read ahead
    assert tl.at(T0)[1] == T0
    assert tl.at(T0 + 119_000_000)[1] == T0 + 80_000_000 and len(reads) == 4  # read no further than needed
    assert tl.at(T0 + 120_000_000)[0][0] == 3
    assert tl.at(T0 + 10**12)[1] == T0 + 160_000_000  # after the end: the last frame stays
    assert tl.at(T0 + 10**13)[1] == T0 + 160_000_000 and len(reads) == 6


def test_video_file_frames_by_their_own_timeline(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for k in range(5):
        writer.write(np.full((24, 32, 3), (0, 0, 50 * k), np.uint8))  # BGR: red grows
    writer.release()
    video = VideoSource(str(path), T0)
    try:
        assert not video.live and video.fps == 10.0
        rgb, stamp = video.frame_at(T0 + 150_000_000)
        assert stamp == T0 + 100_000_000 and rgb.shape == (24, 32, 3)
        assert abs(int(rgb[..., 0].mean()) - 50) <= 3 and rgb[..., 2].mean() < 5  # RGB order
        rgb, stamp = video.frame_at(T0 + 10**10)
        assert stamp == T0 + 400_000_000 and abs(int(rgb[..., 0].mean()) - 200) <= 3
        assert video.frames_read == 5
    finally:
        video.close()


def test_a_missing_video_is_a_one_line_source_error(tmp_path):
    pytest.importorskip("cv2")
    with pytest.raises(SourceError, match="no such video file"):
        VideoSource(str(tmp_path / "none.mp4"), T0)


def test_pacer_sleeps_until_each_chunk_is_due(monkeypatch):
    clock = [100.0]
    slept = []
    monkeypatch.setattr(sources.time, "monotonic", lambda: clock[0])

    def sleep(s):
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(sources.time, "sleep", sleep)
    pacer = Pacer()
    clock[0] += 0.005  # 5 ms of work
    pacer.wait_until(0.020)
    assert slept == [pytest.approx(0.015)]
    clock[0] += 0.050  # behind: no sleep, no catching up by skipping
    pacer.wait_until(0.040)
    assert len(slept) == 1


def test_file_source_chunks_equal_the_whole_file_sliced(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (44100 * 3 + 123, 2)).astype(np.float32)  # several blocks, the last one short
    path = wav(tmp_path / "in.wav", x, 44100)
    source = FileAudioSource(path, T0)
    data, info = read_audio(path)
    assert source.info == info
    chunks = list(source)
    starts = range(0, data.shape[0], source.chunk)
    assert len(chunks) == len(starts)
    for chunk, start in zip(chunks, starts):
        assert chunk.sample_rate == 44100 and chunk.stamp_ns == T0 + start * 1_000_000_000 // 44100
        assert np.array_equal(chunk.samples, data[start:start + source.chunk])


def test_a_file_with_nan_past_the_first_block_is_refused_at_open(tmp_path):
    x = np.zeros(48000 * 2, np.float32)
    x[70000] = np.nan
    with pytest.raises(AudioFileError, match="NaN or infinite"):
        FileAudioSource(wav(tmp_path / "nan.wav", x, 48000), T0)
