"""One standalone session (pipeline/session.py) on small inputs, judged by the folder it writes:
every frame of the input reaches the outputs at its time, the robot is let finish after the
input ends, and a session that fails leaves nothing behind."""
import json

import numpy as np
import pytest
import soundfile as sf
from rosbags.highlevel import AnyReader

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE
from facebot.config.loop import LoopConfig
from facebot.pipeline.backend import DuplexOutput, SpeechBackend
from facebot.pipeline.duplex import DuplexLoop
from facebot.pipeline.session import DRAIN_MAX_FRAMES, SessionReport, run_session
from facebot.pipeline.sources import AudioChunkIn, FileAudioSource, SourceError

T0 = 1_700_000_000_000_000_000
PLAYOUT_MS = 40.0


class HalfEcho(SpeechBackend):
    """The user's frame back at half level, speaking while it is loud, a word every 5th frame;
    ``tail`` more frames of speech after the user stops; ``fail_at`` raises at that frame."""

    name = "half-echo"

    def __init__(self, tail=0, fail_at=None):
        self.tail, self.fail_at = tail, fail_at

    def reset(self, seed=0):
        self.left = 0
        self.steps = 0

    def step(self, inp):
        if self.steps == self.fail_at:
            raise RuntimeError("backend broke")
        self.steps += 1
        loud = float(np.abs(inp.user_audio).max()) > 0.01
        self.left = self.tail if loud else max(self.left - 1, 0)
        audio = inp.user_audio * 0.5 if loud else np.full(FRAME_SAMPLES, 0.2 if self.left else 0.0, np.float32)
        return DuplexOutput(audio=audio, speaking=loud or self.left > 0,
                            text=f"w{inp.index}" if inp.index % 5 == 0 else "")

    def describe(self):
        return "half-echo test backend"


def tone(seconds, rate=MODEL_RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def session(tmp_path, audio, rate=MODEL_RATE, backend=None, name="out", **kw):
    path = tmp_path / f"{name}.wav"
    sf.write(str(path), audio, rate, subtype="FLOAT")
    loop = DuplexLoop(backend or HalfEcho(), LoopConfig(playout_delay_ms=PLAYOUT_MS), seed=3)
    out = tmp_path / name
    kw = {"progress": False, "plot": False, "deterministic": True, **kw}
    return out, run_session(loop, out, FileAudioSource(path, T0), **kw)


def test_every_input_frame_reaches_the_folder_at_its_time(tmp_path):
    audio = tone(1.0)  # 12.5 frames: the last one padded
    audio[12_000:] = 0.0  # the user is quiet at the end: nothing for the robot to finish
    out, report = session(tmp_path, audio)
    assert report.frames == 13 and report.audio_s == pytest.approx(13 * 0.08)
    assert report.out_dir == out and sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.wav"]
    for name in ("robot.wav", "user.wav", "conversation.wav", "flame.npz", "transcript.txt", "summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "session.png").exists()  # plot=False
    summary = json.loads((out / "summary.json").read_text())
    lead = int((FRAME_NS + PLAYOUT_MS * 1e6) * MODEL_RATE / 1e9)  # output frame 0 is heard then
    assert (summary["t0_ns"], summary["frames"], summary["flame_frames"]) == (T0, 13, 26)
    assert summary["robot_lead_samples"] == lead == 2880
    assert summary["backend"] == "half-echo test backend" and summary["seed"] == 3
    assert summary["counters"]["input_gaps_filled"] == 0 and summary["counters"]["input_non_finite_samples"] == 0
    user, rate = sf.read(out / "user.wav", dtype="float32")
    robot, _ = sf.read(out / "robot.wav", dtype="float32")
    both, _ = sf.read(out / "conversation.wav", dtype="float32")
    assert rate == MODEL_RATE and len(user) == len(robot) == 13 * FRAME_SAMPLES + lead
    assert np.allclose(user[:len(audio)], audio, atol=1e-4) and not user[13 * FRAME_SAMPLES:].any()
    assert not robot[:lead].any()
    assert np.allclose(robot[lead:lead + len(audio)], 0.5 * audio, atol=1e-4)  # the echo, heard at its time
    assert np.allclose(both[:, 0], user, atol=1e-4) and np.allclose(both[:, 1], robot, atol=1e-4)
    words = (out / "transcript.txt").read_text().splitlines()
    assert [w.split() for w in words] == [[f"{(k * FRAME_NS + lead * 1e9 / MODEL_RATE) / 1e9:.2f}", f"w{k}"]
                                         for k in (0, 5, 10)]
    with AnyReader([out / "bag"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {"/audio/in": 13, "/audio/out": 13, "/face/flame": 26, "/dialogue/state": 13}
    assert summary["bag_counts"] == counts


def test_input_at_another_rate_is_framed_at_the_models_rate(tmp_path):
    out, report = session(tmp_path, tone(0.8, 48000), rate=48000)
    assert report.frames == 10 + 1  # and one frame of silence after the loud end
    user, rate = sf.read(out / "user.wav", dtype="float32")
    assert rate == MODEL_RATE
    spectrum = np.abs(np.fft.rfft(user[:8 * FRAME_SAMPLES]))
    assert np.argmax(spectrum) * MODEL_RATE / (8 * FRAME_SAMPLES) == pytest.approx(220, abs=2)


def test_the_robot_is_let_finish_after_the_input_ends(tmp_path):
    out, report = session(tmp_path, tone(0.8), backend=HalfEcho(tail=6))
    assert report.frames == 10 + 6  # silence fed until the backend stops speaking
    robot, _ = sf.read(out / "robot.wav", dtype="float32")
    lead = json.loads((out / "summary.json").read_text())["robot_lead_samples"]
    tail = robot[lead + 10 * FRAME_SAMPLES:]
    assert np.allclose(tail[:5 * FRAME_SAMPLES], 0.2, atol=1e-3) and not tail[5 * FRAME_SAMPLES:].any()


def test_draining_is_bounded(tmp_path):
    _, report = session(tmp_path, tone(0.4), backend=HalfEcho(tail=10_000))
    assert report.frames == 5 + DRAIN_MAX_FRAMES


def test_a_failing_backend_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="backend broke"):
        session(tmp_path, tone(1.0), backend=HalfEcho(fail_at=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


class Silent:
    """A source that yields no audio (a bag whose audio topic is empty)."""

    t0_ns = T0
    duration_s = 0.0
    dropped = {"bad_encoding": 3}

    def __iter__(self):
        return iter(())


def test_an_input_without_audio_is_refused_and_writes_nothing(tmp_path):
    loop = DuplexLoop(HalfEcho(), seed=0)
    with pytest.raises(SourceError, match=r"no usable audio in the input \(dropped: 3 bad_encoding\)"):
        run_session(loop, tmp_path / "out", Silent(), progress=False, plot=False)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept_unless_replace(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="already exists"):
        session(tmp_path, tone(0.4))
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    out, _ = session(tmp_path, tone(0.4), replace=True)
    assert not (out / "mine.txt").exists() and (out / "summary.json").is_file()


def test_truncated_input_is_noted_in_the_summary(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(str(path), tone(1.0), MODEL_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:44 + 2 * 9600])
    loop = DuplexLoop(HalfEcho(), seed=0)
    report = run_session(loop, tmp_path / "out", FileAudioSource(path, T0), progress=False, plot=False)
    assert report.frames == 5 + 1 and len(report.notes) == 1 and "truncated" in report.notes[0]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["notes"] == report.notes


def test_report_latency_table_and_real_time_factor(tmp_path):
    report = SessionReport(out_dir=tmp_path, frames=4, audio_s=2.0, compute_s=0.5,
                           timings_ms={"vad": [1.0, 2.0, 3.0, 4.0], "step": [10.0, 20.0, 30.0, 90.0], "face": []})
    assert report.real_time_factor == 0.25
    table = report.latency_table()
    assert list(table) == ["vad", "step"]
    assert table["vad"] == {"p50": 2.5, "p99": pytest.approx(3.97), "max": 4.0}
    text = report.format_table()
    assert "real-time factor 0.250 (4 frames, 2.0 s of audio, 1 over the 80 ms budget)" in text
    assert np.isnan(SessionReport(out_dir=tmp_path, frames=0, audio_s=0.0, compute_s=1.0).real_time_factor)


def test_chunk_stamps_drive_the_frame_stamps(tmp_path):
    """A source whose chunks jump ahead in time: the gap is filled with silence, counted, and
    the frames after it keep the capture times of their samples."""

    class Gappy:
        t0_ns = T0
        duration_s = 1.0

        def __iter__(self):
            x = tone(0.24)
            yield AudioChunkIn(x[:, None], MODEL_RATE, T0)
            yield AudioChunkIn(x[:, None], MODEL_RATE, T0 + 400_000_000)  # 160 ms missing

    loop = DuplexLoop(HalfEcho(), seed=0)
    report = run_session(loop, tmp_path / "out", Gappy(), progress=False, plot=False, deterministic=True)
    assert report.frames == 8 + 1 and report.counters["input_gaps_filled"] == 1
    user, _ = sf.read(tmp_path / "out" / "user.wav", dtype="float32")
    assert not user[3 * FRAME_SAMPLES:5 * FRAME_SAMPLES].any() and user[5 * FRAME_SAMPLES:].any()
