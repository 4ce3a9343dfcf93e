"""What `--force` may replace, atomic writes, signals: a run or a write that fails or is
stopped never costs the user a file they had (issue 12, items 1, 2 and 7)."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from facebot import cli
from facebot.audio.espeak import EspeakVoice
from facebot.config import CONFIG_DIR
from facebot.face.flame import FlameTrack
from facebot.io.atomic import AtomicWriteError, atomic_write_text

T0 = 1_700_000_000_000_000_000
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    clip = EspeakVoice(voice="en-us+m3").synthesize("Hello robot, how are you?", sample_rate=24000).audio
    path = tmp_path_factory.mktemp("in") / "hello.wav"
    sf.write(path, np.concatenate([np.zeros(2400, np.float32), clip, np.zeros(24000, np.float32)]), 24000)
    return path


def run(*args):
    return cli.main(["run", "--t0-ns", str(T0), "--no-progress", "--no-video", *args])


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory, wav):
    """A finished facebot output folder, made once; tests copy it."""
    out = tmp_path_factory.mktemp("prev") / "prev"
    assert run("--input", str(wav), "--out", str(out)) == 0
    return out


def copy_of(folder, dest):
    import shutil

    shutil.copytree(folder, dest)
    return dest


def one_line_refusal(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("facebot: error:") and needle in err[-1], err
    return err[-1]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------
# item 1: --force replaces an earlier facebot output, nothing else, and only at the end


def test_force_never_empties_the_working_directory(tmp_path, wav, monkeypatch, capsys):
    """`facebot run --out . --force` used to empty the current directory, then fail."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (work / "summary.json").write_text(json.dumps({"backend": "x", "counters": {}}))  # even so
    monkeypatch.chdir(work / "sub")
    for out in (".", "..", str(work)):
        assert run("--input", str(wav), "--out", out, "--force") == 2
        one_line_refusal(capsys, "holds the working directory")
    assert (work / "notes.txt").read_text() == "mine"


def test_force_never_replaces_a_folder_holding_an_input(tmp_path, earlier_output, capsys):
    """`facebot bag prev/bag --out prev --force` used to delete the input bag before reading it."""
    prev = copy_of(earlier_output, tmp_path / "prev")
    before = snapshot(prev)
    rc = cli.main(["bag", str(prev / "bag"), "--audio-topic", "/audio/in", "--out", str(prev), "--force",
                   "--no-progress", "--no-video"])
    assert rc == 2
    one_line_refusal(capsys, f"holds the input {prev / 'bag'}")
    assert snapshot(prev) == before


def test_force_never_replaces_a_file_or_a_folder_facebot_did_not_write(tmp_path, wav, capsys):
    afile = tmp_path / "afile"
    afile.write_text("precious")
    assert run("--input", str(wav), "--out", str(afile), "--force") == 2  # was a traceback
    one_line_refusal(capsys, "is a file, not a facebot output folder")
    assert afile.read_text() == "precious"
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"\xff\xd8")
    assert run("--input", str(wav), "--out", str(photos), "--force") == 2
    one_line_refusal(capsys, "not a facebot output folder")
    assert (photos / "a.jpg").read_bytes() == b"\xff\xd8"


def test_force_swaps_an_earlier_output_only_once_the_new_one_is_complete(tmp_path, wav, earlier_output,
                                                                         monkeypatch):
    prev = copy_of(earlier_output, tmp_path / "prev")
    (prev / "marker").write_text("from the earlier run")
    before = snapshot(prev)
    from facebot.pipeline.recorder import SessionRecorder

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:  # the new run finds the disk full while writing its outputs
        m.setattr(SessionRecorder, "_write_plot", fail)
        assert run("--input", str(wav), "--out", str(prev), "--force") == 2
    assert snapshot(prev) == before and not (tmp_path / "prev.partial").exists()
    assert run("--input", str(wav), "--out", str(prev), "--force") == 0
    assert not (prev / "marker").exists() and (prev / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prev"]


# ------------------------------------------------------------------------------------------
# item 2: files a user keeps are written atomically


def _half_then_full_disk(original):
    """A writer that gets half its bytes out, then finds the disk full."""
    def write(self, data, *args, **kwargs):
        original(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_calibrate_on_a_full_disk_leaves_the_config_intact(tmp_path, monkeypatch, capsys):
    """`facebot calibrate --config X --out X --force` on a full disk used to leave X as truncated YAML."""
    from facebot.robot.calibrate import reference_samples

    config = tmp_path / "head.yaml"
    config.write_bytes((CONFIG_DIR / "head_reference.yaml").read_bytes())
    samples = tmp_path / "pairs.npz"
    np.savez(samples, **reference_samples(300, 0))
    before = config.read_bytes()
    monkeypatch.setattr(pathlib.Path, "write_text", _half_then_full_disk(pathlib.Path.write_text))
    rc = cli.main(["calibrate", "--samples", str(samples), "--config", str(config), "--out", str(config), "--force"])
    assert rc == 2
    line = one_line_refusal(capsys, "No space left on device")
    assert str(config) in line and "unchanged" in line
    assert config.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.yaml", "pairs.npz"]  # no temporary left


def test_npz_and_text_writes_keep_the_old_file_when_the_writer_fails(tmp_path, monkeypatch):
    track = FlameTrack.from_frames([])
    npz = tmp_path / "flame.npz"
    np.savez(npz, old=np.arange(3))
    before = npz.read_bytes()

    def savez_then_fail(path, **arrays):
        pathlib.Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(np, "savez", savez_then_fail)
        with pytest.raises(AtomicWriteError, match="flame.npz: not written .*unchanged"):
            track.save_npz(npz)
    assert npz.read_bytes() == before
    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    def full_at_fsync(fd):  # delayed allocation: the disk is found full when flushing
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_at_fsync)
        with pytest.raises(AtomicWriteError, match="summary.json: not written"):
            atomic_write_text(summary, json.dumps({"a": 1}))
    assert summary.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["flame.npz", "summary.json"]
    atomic_write_text(summary, "new")
    assert summary.read_text() == "new"


# ------------------------------------------------------------------------------------------
# item 7: SIGTERM, SIGHUP and a full disk end a run like Ctrl-C


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """Three minutes of quiet noise: long enough to be signalled mid-run."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 1e-3, 24000 * 180).astype(np.float32), 24000)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_run_removes_the_partial_output_and_exits_128_plus_n(tmp_path, long_wav, sig):
    """SIGTERM / SIGHUP used to leave <out>.partial/ behind (only SIGINT was clean)."""
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "facebot.cli", "run", "--input", str(long_wav), "--out", str(out),
                             "--t0-ns", str(T0), "--no-video", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (out.with_name("o.partial") / "bag").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)  # well inside the session
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"facebot: stopped by {signal.Signals(sig).name}; no output kept"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_mid_run_is_one_line_and_leaves_nothing(tmp_path, wav, monkeypatch, capsys):
    from facebot.bagio import BagRecorder

    write = BagRecorder.write
    calls = []

    def write_until_full(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 200:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return write(self, *args, **kwargs)

    monkeypatch.setattr(BagRecorder, "write", write_until_full)
    out = tmp_path / "o"
    assert run("--input", str(wav), "--out", str(out)) == 2
    one_line_refusal(capsys, "No space left on device; no output kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
