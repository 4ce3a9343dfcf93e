"""Reading audio files: every kind of bad input is converted or refused in one line."""
import numpy as np
import pytest
import soundfile as sf

from facebot.audio.files import AudioFileError, read_audio


def write(path, x, rate, subtype):
    sf.write(str(path), x, rate, subtype=subtype)
    return path


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_32", "FLOAT", "PCM_U8", "PCM_24"])
def test_formats_read_to_float(tmp_path, subtype):
    x = (0.5 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    data, info = read_audio(write(tmp_path / "a.wav", x, 16000, subtype))
    assert data.dtype == np.float32 and data.shape == (8000, 1) and info.sample_rate == 16000
    assert np.max(np.abs(data[:, 0] - x)) < 1 / 64


def test_stereo_is_kept_for_the_framer(tmp_path):
    x = np.zeros((100, 2), np.float32)
    data, info = read_audio(write(tmp_path / "s.wav", x, 44100, "PCM_16"))
    assert info.channels == 2 and data.shape == (100, 2)


def test_truncated_wav_is_used_with_a_note(tmp_path):
    p = write(tmp_path / "t.wav", np.zeros(24000, np.float32), 24000, "PCM_16")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    data, info = read_audio(p)
    assert 0 < data.shape[0] < 24000
    assert "truncated" in info.truncated_note and str(p) in info.truncated_note


@pytest.mark.parametrize("make,needle", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("this is not audio\n" * 50), "not a readable audio file"),
    (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "not a readable audio file"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, make, needle):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioFileError) as err:
        read_audio(p)
    msg = str(err.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_header_only_wav_has_no_audio(tmp_path):
    p = write(tmp_path / "h.wav", np.zeros(0, np.float32), 24000, "PCM_16")
    with pytest.raises(AudioFileError, match="no audio samples"):
        read_audio(p)


def test_directory_is_refused(tmp_path):
    with pytest.raises(AudioFileError, match="is a directory"):
        read_audio(tmp_path)
