"""The session recorder (pipeline/recorder.py), judged by the folder it leaves: the WAVs, FLAME
track, transcript, summary and bag hold what the loop produced, at its times; the folder appears
under its name only when the session ends cleanly, and an aborted one leaves nothing."""
import json

import numpy as np
import pytest
import soundfile as sf
from rosbags.highlevel import AnyReader

from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, MODEL_RATE, AudioFrame
from facebot.config.loop import LoopConfig
from facebot.face.flame import FlameTrack
from facebot.pipeline.backend import DuplexOutput, SpeechBackend
from facebot.pipeline.duplex import DuplexLoop
from facebot.pipeline.recorder import SessionRecorder

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
