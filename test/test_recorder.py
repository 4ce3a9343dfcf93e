"""The session recorder (pipeline/recorder.py), judged by the folder it leaves: the WAVs, FLAME
track, transcript, summary and bag hold what the loop produced, at its times; the folder appears
under its name only when the session ends cleanly, and an aborted one leaves nothing.
Outputs are streamed to disk as the session runs, equal to what holding everything and writing
it at the end gave, with memory that does not grow with the session."""
import gc
import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from rosbags.highlevel import AnyReader

from facebot.audio.files import write_wav
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.config import CONFIG_DIR
from facebot.config.loop import LoopConfig
from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame, FlameTrack, FrameSource
from facebot.pipeline.backend import DuplexOutput, SpeechBackend, UserActivity
from facebot.pipeline.duplex import DialogueStateKind, DuplexLoop, StepResult
from facebot.pipeline.head import HeadDriver
from facebot.pipeline.recorder import SCRATCH, SessionRecorder
from facebot.robot.head_config import load_head_config
from facebot.robot.head_controller import HeadController

T0 = 1_700_000_000_000_000_000
PLAYOUT_MS = 20.0
LEAD = int((FRAME_NS + PLAYOUT_MS * 1e6) * MODEL_RATE / 1e9)  # output frame 0 is heard this late


class Ramp(SpeechBackend):
    """Robot frame k is the constant 0.01 * (k + 1); a word on every 3rd frame."""

    name = "ramp"

    def reset(self, seed=0):
        pass

    def step(self, inp):
        level = 0.01 * (inp.index + 1)
        return DuplexOutput(audio=np.full(FRAME_SAMPLES, level, np.float32), speaking=True,
                            text=f"word{inp.index}" if inp.index % 3 == 0 else "")


def results(n=6):
    loop = DuplexLoop(Ramp(), LoopConfig(playout_delay_ms=PLAYOUT_MS))
    rng = np.random.default_rng(0)
    frames = [AudioFrame(rng.uniform(-0.2, 0.2, FRAME_SAMPLES).astype(np.float32), T0 + k * FRAME_NS, k)
              for k in range(n)]
    return [loop.step(f) for f in frames]


def record(out, steps, summary=None, **kw):
    rec = SessionRecorder(out, "ramp test backend", plot=kw.pop("plot", False), **kw)
    for r in steps:
        rec.add(r)
    assert rec.frames == len(steps)
    assert not out.exists()  # nothing under the final name until the session ends
    return rec.finish(summary or {"backend": "ramp test backend"})


def test_the_folder_holds_what_the_loop_produced_at_its_times(tmp_path):
    steps = results()
    out = record(tmp_path / "out", steps, {"backend": "ramp test backend", "mine": 7}, deterministic=True)
    assert out == tmp_path / "out" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    user, rate = sf.read(out / "user.wav", dtype="float32")
    robot, _ = sf.read(out / "robot.wav", dtype="float32")
    both, _ = sf.read(out / "conversation.wav", dtype="float32")
    n = 6 * FRAME_SAMPLES
    assert rate == MODEL_RATE and len(user) == len(robot) == len(both) == n + LEAD
    assert np.allclose(user[:n], np.concatenate([r.user_audio for r in steps]), atol=1e-4)
    assert not user[n:].any() and not robot[:LEAD].any()
    for k in range(6):  # each robot frame where it is heard
        assert np.allclose(robot[LEAD + k * FRAME_SAMPLES:LEAD + (k + 1) * FRAME_SAMPLES], 0.01 * (k + 1), atol=1e-4)
    assert np.allclose(both[:, 0], user, atol=1e-4) and np.allclose(both[:, 1], robot, atol=1e-4)

    track = FlameTrack.load_npz(out / "flame.npz")
    assert track.stamp_ns.tolist() == [f.stamp_ns for r in steps for f in r.flame]
    assert track.stamp_ns[0] == T0 + FRAME_NS + PLAYOUT_MS * 1e6
    assert np.allclose(track.jaw_pose, [f.jaw_pose for r in steps for f in r.flame])

    heard_s = (FRAME_NS + PLAYOUT_MS * 1e6) / 1e9
    assert (out / "transcript.txt").read_text() == "".join(
        f"{heard_s + k * 0.08:8.2f}  word{k}\n" for k in (0, 3))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mine"] == 7 and summary["backend"] == "ramp test backend"
    assert (summary["t0_ns"], summary["frames"], summary["flame_frames"]) == (T0, 6, 12)
    assert summary["robot_lead_samples"] == LEAD
    expected = {"/audio/in": 6, "/audio/out": 6, "/face/flame": 12, "/dialogue/state": 6}
    assert summary["bag_counts"] == expected


def test_the_bag_carries_the_frames_with_their_stamps(tmp_path):
    steps = results(4)
    out = record(tmp_path / "out", steps, deterministic=True)
    with AnyReader([out / "bag"]) as reader:
        msgs = {}
        for conn, stamp, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    assert [s for s, _ in msgs["/audio/in"]] == [T0 + k * FRAME_NS for k in range(4)]
    assert [s for s, _ in msgs["/audio/out"]] == [r.audio_stamp_ns for r in steps]
    pcm = np.frombuffer(bytes(msgs["/audio/in"][2][1].data), "<i2") / 32768.0
    assert np.allclose(pcm, steps[2].user_audio, atol=1e-4)
    assert [s for s, _ in msgs["/face/flame"]] == [f.stamp_ns for r in steps for f in r.flame]
    states = [m for _, m in msgs["/dialogue/state"]]
    assert [m.text for m in states] == ["word0", "", "", "word3"]
    assert all(m.robot_speaking and m.backend == "ramp test backend" for m in states)
    assert all(m.step_latency_ms == 0.0 for m in states)  # deterministic: no wall-clock in the bag


def test_step_latency_goes_into_the_bag_unless_deterministic(tmp_path):
    steps = results(2)
    steps[0].timings_ms["step"], steps[1].timings_ms["step"] = 12.5, 30.0
    out = record(tmp_path / "out", steps)
    with AnyReader([out / "bag"]) as reader:
        conn = [c for c in reader.connections if c.topic == "/dialogue/state"]
        latency = [reader.deserialize(raw, c.msgtype).step_latency_ms for c, _, raw in reader.messages(connections=conn)]
    assert latency == [12.5, 30.0]


def test_abort_leaves_nothing_behind(tmp_path):
    rec = SessionRecorder(tmp_path / "out", "ramp", plot=False)
    for r in results(3):
        rec.add(r)
    rec.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused_or_replaced_only_at_the_end(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier run")
    with pytest.raises(FileExistsError, match="already exists"):
        SessionRecorder(out, "ramp", plot=False)
    rec = SessionRecorder(out, "ramp", plot=False, replace=True)
    for r in results(2):
        rec.add(r)
    assert (out / "old.txt").read_text() == "earlier run"  # still there while recording
    rec.finish({})
    assert not (out / "old.txt").exists() and json.loads((out / "summary.json").read_text())["frames"] == 2


def test_camera_frames_are_recorded_once_each(tmp_path):
    rec = SessionRecorder(tmp_path / "out", "ramp", with_video=True, plot=False)
    steps = results(3)
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :, 0] = 200
    for k, r in enumerate(steps):
        rec.add_image(image, T0 + (k // 2) * FRAME_NS)  # frames 0 and 1 reuse the same image
        rec.add(r)
    out = rec.finish({})
    with AnyReader([out / "bag"]) as reader:
        conn = [c for c in reader.connections if c.topic == "/camera/image_raw/compressed"]
        images = [(stamp, reader.deserialize(raw, c.msgtype)) for c, stamp, raw in reader.messages(connections=conn)]
    assert [s for s, _ in images] == [T0, T0 + FRAME_NS]
    assert images[0][1].format == "jpeg" and bytes(images[0][1].data[:2]) == b"\xff\xd8"


def test_the_plot_is_written_when_asked(tmp_path):
    out = record(tmp_path / "out", results(4), plot=True)
    png = (out / "session.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# streamed to disk: equal outputs, bounded memory

T0_STREAM = 1_000_000_000_000
PLAYOUT_NS = 125_000_000  # the robot heard 80 + 125 ms after capture: 4920 samples, not whole frames or windows


def random_step(k: int, rng: np.random.Generator) -> StepResult:
    capture = T0_STREAM + k * FRAME_NS
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


def record_random(out, frames: int, head: HeadDriver | None = None, seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    rec = SessionRecorder(out, "test", head=head, **kwargs)
    steps = []
    for k in range(frames):
        r = random_step(k, rng)
        rec.add(r, head.advance(r, now_ns=r.capture_stamp_ns + FRAME_NS) if head is not None else ())
        steps.append(r)
    rec.finish({"backend": "test", "counters": {}})
    return steps


def test_outputs_equal_holding_everything_and_writing_at_the_end(tmp_path):
    out = tmp_path / "out"
    steps = record_random(out, 40, plot=False)
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

    times = [(r.audio_stamp_ns - T0_STREAM) / 1e9 for r in steps if r.output.text]
    assert (out / "transcript.txt").read_text() == "".join(f"{t:8.2f}  hi\n" for t in times)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["flame_frames"] == 80 and summary["robot_lead_samples"] == lead
    assert not (out / SCRATCH).exists() and not (tmp_path / "out.partial").exists()


def test_joint_commands_are_written_as_they_come(tmp_path):
    head = head_driver()
    record_random(tmp_path / "out", 30, head=head)
    rows = (tmp_path / "out" / "joints.csv").read_text().splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(rows) - 1 == summary["head"]["commands"] > 0
    assert summary["bag_counts"]["/joint_states"] == summary["head"]["commands"]
    assert (tmp_path / "out" / "session.png").read_bytes()[:4] == b"\x89PNG"


def test_recorder_does_not_drive_the_head(tmp_path):
    """The session steps the head driver (its own "head" stage); the recorder only records."""
    head = head_driver()
    rec = SessionRecorder(tmp_path / "out", "test", head=head)
    r = random_step(0, np.random.default_rng(0))
    rec.add(r)
    assert head.controller.counters == head_driver().controller.counters and head._next_tick is None
    rec.abort()


def test_abort_with_head_commands_leaves_nothing(tmp_path):
    rec = SessionRecorder(tmp_path / "out", "test", head=head_driver())
    rec.add(random_step(0, np.random.default_rng(0)))
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
            r = random_step(k, rng)
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
    steps = record_random(tmp_path / "out", 5, plot=False)
    user, rate = sf.read(tmp_path / "out" / "user.wav", dtype="float32")
    assert rate == MODEL_RATE and np.allclose(user[:FRAME_SAMPLES], np.clip(steps[0].user_audio, -1, 1), atol=1e-4)
