"""The session recorder: outputs streamed to disk as the session runs, equal to what holding
everything and writing it at the end gave, with memory that does not grow with the session."""
from __future__ import annotations

import gc
import json
import tracemalloc

import numpy as np
import soundfile as sf

from facebot.audio.files import write_wav
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE
from facebot.config import CONFIG_DIR
from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame, FlameTrack, FrameSource
from facebot.pipeline.backend import DuplexOutput, UserActivity
from facebot.pipeline.duplex import DialogueStateKind, StepResult
from facebot.pipeline.head import HeadDriver
from facebot.pipeline.recorder import SCRATCH, SessionRecorder
from facebot.robot.actuators import HeadController, load_head_config

T0 = 1_000_000_000_000
PLAYOUT_NS = 125_000_000  # the robot heard 80 + 125 ms after capture: 4920 samples, not whole frames or windows


def step(k: int, rng: np.random.Generator) -> StepResult:
    capture = T0 + k * FRAME_NS
    heard = capture + FRAME_NS + PLAYOUT_NS
    flame = [FlameFrame(expression=rng.normal(0, 0.3, 50), jaw_pose=[abs(rng.normal(0, 0.1)), 0, 0],
                        neck_pose=rng.normal(0, 0.05, 3), eye_pose=rng.normal(0, 0.01, 6), eyelids=rng.random(2),
                        stamp_ns=heard + i * FRAME_PERIOD_NS, sequence=2 * k + i, source=FrameSource.PROCEDURAL)
             for i in range(2)]
    return StepResult(
        index=k, capture_stamp_ns=capture, audio_stamp_ns=heard,
        user_audio=rng.uniform(-1.2, 1.2, FRAME_SAMPLES).astype(np.float32),  # some clip
        robot_audio=rng.uniform(-0.5, 0.5, FRAME_SAMPLES).astype(np.float32),
        flame=flame, output=DuplexOutput(np.zeros(FRAME_SAMPLES, np.float32), text="hi" if k % 7 == 3 else ""),
        user=UserActivity(), state=DialogueStateKind.LISTENING, timings_ms={"step": 1.0})


def head_driver() -> HeadDriver:
    return HeadDriver(HeadController(load_head_config(CONFIG_DIR / "head_reference.yaml")))


def record(out, frames: int, head: HeadDriver | None = None, seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    rec = SessionRecorder(out, "test", head=head, **kwargs)
    steps = []
    for k in range(frames):
        r = step(k, rng)
        rec.add(r, head.advance(r, now_ns=r.capture_stamp_ns + FRAME_NS) if head is not None else ())
        steps.append(r)
    rec.finish({"backend": "test", "counters": {}})
    return steps


def test_outputs_equal_holding_everything_and_writing_at_the_end(tmp_path):
    out = tmp_path / "out"
    steps = record(out, 40, plot=False)
    lead = (FRAME_NS + PLAYOUT_NS) * MODEL_RATE // 1_000_000_000
    user = np.concatenate([r.user_audio for r in steps])
    robot = np.concatenate([np.zeros(lead, np.float32)] + [r.robot_audio for r in steps])
    user = np.pad(user, (0, robot.shape[0] - user.shape[0]))
    expected = tmp_path / "expected"
    expected.mkdir()
    write_wav(expected / "user.wav", user, MODEL_RATE)
    write_wav(expected / "robot.wav", robot, MODEL_RATE)
    write_wav(expected / "conversation.wav", np.stack([user, robot], axis=1), MODEL_RATE)
    for name in ("user.wav", "robot.wav", "conversation.wav"):
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name

    FlameTrack.from_frames([f for r in steps for f in r.flame]).save_npz(expected / "flame.npz")
    with np.load(out / "flame.npz") as got, np.load(expected / "flame.npz") as want:
        assert got.files == want.files
        for key in want.files:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key

    times = [(r.audio_stamp_ns - T0) / 1e9 for r in steps if r.output.text]
    assert (out / "transcript.txt").read_text() == "".join(f"{t:8.2f}  hi\n" for t in times)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["flame_frames"] == 80 and summary["robot_lead_samples"] == lead
    assert not (out / SCRATCH).exists() and not (tmp_path / "out.partial").exists()


def test_joint_commands_are_written_as_they_come(tmp_path):
    head = head_driver()
    record(tmp_path / "out", 30, head=head)
    rows = (tmp_path / "out" / "joints.csv").read_text().splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(rows) - 1 == summary["head"]["commands"] > 0
    assert summary["bag_counts"]["/joint_states"] == summary["head"]["commands"]
    assert (tmp_path / "out" / "session.png").read_bytes()[:4] == b"\x89PNG"


def test_recorder_does_not_drive_the_head(tmp_path):
    """The session steps the head driver (its own "head" stage); the recorder only records."""
    head = head_driver()
    rec = SessionRecorder(tmp_path / "out", "test", head=head)
    r = step(0, np.random.default_rng(0))
    rec.add(r)
    assert head.controller.counters == head_driver().controller.counters and head._next_tick is None
    rec.abort()


def test_abort_leaves_nothing(tmp_path):
    rec = SessionRecorder(tmp_path / "out", "test", head=head_driver())
    rec.add(step(0, np.random.default_rng(0)))
    rec.abort()
    assert list(tmp_path.iterdir()) == []


def test_recorder_memory_does_not_grow_with_the_session(tmp_path):
    """Four times the steps, not four times the memory: what a step leaves behind is on disk.
    (Holding the steps cost ~20 kB each: 200 steps held ~4 MB, 800 ~16 MB.) The bag's pending
    MCAP chunk is left out: it fills to 1 MiB and is flushed, whatever the session's length."""
    head = head_driver()
    rng = np.random.default_rng(1)
    rec = SessionRecorder(tmp_path / "out", "test", head=head)
    outside_the_bag_chunk = [tracemalloc.Filter(False, "*/rosbags/rosbag2/storage_mcap.py")]

    def held() -> int:
        gc.collect()
        return sum(s.size for s in tracemalloc.take_snapshot().filter_traces(outside_the_bag_chunk).statistics("filename"))

    def run(steps: int, start: int) -> None:
        for k in range(start, start + steps):
            r = step(k, rng)
            rec.add(r, head.advance(r, now_ns=r.capture_stamp_ns + FRAME_NS))

    run(100, 0)  # warm-up: buffers, caches
    tracemalloc.start()
    try:
        before = held()
        run(200, 100)
        short = held() - before
        run(600, 300)
        long = held() - before
    finally:
        tracemalloc.stop()
        rec.abort()
    assert long < short + 128 * 1024 and long < 256 * 1024, (short, long)


def test_wavs_read_back_as_written(tmp_path):
    steps = record(tmp_path / "out", 5, plot=False)
    user, rate = sf.read(tmp_path / "out" / "user.wav", dtype="float32")
    assert rate == MODEL_RATE and np.allclose(user[:FRAME_SAMPLES], np.clip(steps[0].user_audio, -1, 1), atol=1e-4)
