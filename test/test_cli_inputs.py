"""`facebot run` on bad or unusual input: converted correctly, or refused in one line."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from facebot import cli
from facebot.audio.espeak import EspeakVoice

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def speech():
    clip = EspeakVoice(voice="en-us+m3").synthesize("Hello robot, how are you?", sample_rate=48000)
    return np.concatenate([np.zeros(4800, np.float32), clip.audio, np.zeros(48000 * 2, np.float32)])


def run(tmp_path, *args):
    out = tmp_path / "out"
    rc = cli.main(["run", "--out", str(out), "--t0-ns", str(T0), "--no-progress", *args])
    return rc, out


@pytest.mark.parametrize("rate,channels,subtype", [
    (16000, 1, "PCM_16"),   # wrong sample rate
    (44100, 2, "PCM_16"),   # stereo at CD rate
    (48000, 1, "FLOAT"),    # float32 PCM
    (22050, 2, "PCM_32"),   # int32 PCM, stereo
    (8000, 1, "PCM_U8"),    # 8-bit telephone audio
])
def test_any_wav_is_converted_and_answered(tmp_path, speech, rate, channels, subtype):
    import soxr

    mono = soxr.resample(speech, 48000, rate).astype(np.float32)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    path = tmp_path / "in.wav"
    sf.write(path, data, rate, subtype=subtype)
    rc, out = run(tmp_path, "--input", str(path))
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    input_frames = -(-len(mono) * 24000 // rate // 1920)
    assert summary["frames"] >= input_frames  # all input heard, plus the reply finishing
    assert summary["counters"]["replies_started"] == 1  # the user's question got an answer
    user, urate = sf.read(out / "user.wav", dtype="float32")
    assert urate == 24000 and user.ndim == 1


def test_truncated_wav_is_used_with_a_warning(tmp_path, speech, capsys):
    path = tmp_path / "trunc.wav"
    sf.write(path, speech, 48000, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.6)])
    rc, out = run(tmp_path, "--input", str(path))
    assert rc == 0 and (out / "summary.json").is_file()
    err = capsys.readouterr().err
    assert "truncated" in err and str(path) in err
    assert any("truncated" in n for n in json.loads((out / "summary.json").read_text())["notes"])


@pytest.mark.parametrize("name,content,needle", [
    ("empty.wav", b"", "empty file"),
    ("missing.wav", None, "no such file"),
    ("notes.wav", b"these are my notes, not audio\n" * 40, "not a readable audio file"),
    ("header.wav", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00", "not a readable audio file"),
])
def test_bad_files_are_refused_in_one_line_without_output(tmp_path, capsys, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    rc, out = run(tmp_path, "--input", str(path))
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and str(path) in err and err.startswith("facebot: error:")
    assert not out.exists() and not out.with_name("out.partial").exists()


def _wav_header_saying(rate: int, data: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)  # PCM, mono, 16-bit
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize("rate", [1, 3999, 384_001])
def test_a_lying_sample_rate_is_refused_in_one_line(tmp_path, capsys, rate):
    """Issue 12.5: 96 KB whose header says 1 Hz is 13 h of audio; it ran 600 s, reached 2.2 GB
    and left out.partial/. Now: one line, exit 2, nothing written."""
    path = tmp_path / "liar.wav"
    path.write_bytes(_wav_header_saying(rate, bytes(96_000)))
    rc, out = run(tmp_path, "--input", str(path))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and f"sample rate {rate} Hz is outside" in err and str(path) in err
    assert not out.exists() and not out.with_name("out.partial").exists()


def test_refusal_from_the_shell_has_no_traceback(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_text("nope")
    proc = subprocess.run([sys.executable, "-m", "facebot.cli", "run", "--input", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_existing_output_folder_is_not_overwritten(tmp_path, speech):
    path = tmp_path / "in.wav"
    sf.write(path, speech, 48000)
    (tmp_path / "out").mkdir()
    rc, _ = run(tmp_path, "--input", str(path))
    assert rc == 2


def test_config_typo_is_refused(tmp_path, speech, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scripted:\n  turns:\n    end_of_turn_msec: 700\n")
    path = tmp_path / "in.wav"
    sf.write(path, speech, 48000)
    rc, out = run(tmp_path, "--input", str(path), "--config", str(cfg))
    assert rc == 2
    err = capsys.readouterr().err
    assert "end_of_turn_msec" in err and "end_of_turn_ms" in err and not out.exists()


def test_video_file_is_read_on_the_audio_timeline_and_recorded(tmp_path, speech):
    import cv2
    from rosbags.highlevel import AnyReader

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(30):  # 3 s at 10 fps, each frame a different grey
        writer.write(np.full((48, 64, 3), i * 8, np.uint8))
    writer.release()
    audio = tmp_path / "in.wav"
    sf.write(audio, speech, 48000)
    rc, out = run(tmp_path, "--input", str(audio), "--video", str(video))
    assert rc == 0
    with AnyReader([out / "bag"]) as reader:
        conn = [c for c in reader.connections if c.topic == "/camera/image_raw/compressed"]
        assert conn and conn[0].msgtype == "sensor_msgs/msg/CompressedImage"
        stamps = [t for _, t, _ in reader.messages(connections=conn)]
    assert len(stamps) == 30  # every frame used once, none twice
    assert np.allclose(np.diff(stamps), 100_000_000, atol=2_000_000)  # on the video's own 10 fps timeline
    assert stamps[0] == T0


def test_missing_video_is_refused(tmp_path, speech, capsys):
    audio = tmp_path / "in.wav"
    sf.write(audio, speech, 48000)
    rc, out = run(tmp_path, "--input", str(audio), "--video", str(tmp_path / "nope.mp4"))
    assert rc == 2 and "no such video file" in capsys.readouterr().err and not out.exists()
