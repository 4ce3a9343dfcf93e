"""File input: replayed a block at a time, the same chunks and stamps as the whole file sliced."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from facebot.audio.files import AudioFileError, read_audio
from facebot.pipeline.plots import min_max_points
from facebot.pipeline.sources import FileAudioSource

T0 = 5_000_000_000


def test_file_source_chunks_equal_the_whole_file_sliced(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (44100 * 3 + 123, 2)).astype(np.float32)  # not a whole number of blocks
    path = tmp_path / "in.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    source = FileAudioSource(path, T0)
    data, info = read_audio(path)
    assert source.info == info
    chunks = list(source)
    starts = range(0, data.shape[0], source.chunk)
    assert len(chunks) == len(starts)
    for chunk, start in zip(chunks, starts):
        assert chunk.sample_rate == 44100 and chunk.stamp_ns == T0 + start * 1_000_000_000 // 44100
        assert np.array_equal(chunk.samples, data[start:start + source.chunk])


def test_a_file_with_nan_is_refused_before_the_session_starts(tmp_path):
    x = np.zeros(48000 * 2, np.float32)
    x[70000] = np.nan  # past the first block
    path = tmp_path / "nan.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="NaN or infinite"):
        FileAudioSource(path, T0)


def test_plot_lines_keep_their_extremes_within_the_point_budget():
    x = np.arange(100_000) / 100.0
    y = np.sin(x) + (np.arange(100_000) == 54_321) * 5.0
    px, py = min_max_points(x, y, max_points=1000)
    assert px.shape[0] <= 1000 and np.all(np.diff(px) >= 0)
    assert py.max() == y.max() and py.min() == y.min()
    short_x, short_y = min_max_points(x[:1000], y[:1000], max_points=1000)
    assert np.array_equal(short_x, x[:1000])
    assert np.array_equal(short_y, y[:1000])
