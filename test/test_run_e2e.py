"""`facebot run` end to end on the default sample conversation: what a new user sees (the run
is the session's ``sample_run``, made once in conftest.py)."""
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from rosbags.highlevel import AnyReader

from facebot.face.flame import FRAME_PERIOD_NS, FlameTrack, FrameSource
from facebot.config.scripted import DEFAULT_REPLIES

sys.path.insert(0, str(Path(__file__).parent))
from asr import transcribe  # noqa: E402

T0 = 1_700_000_000_000_000_000


def speech_segments(x, rate, min_gap_s=0.5, level=1e-3):
    """(start_s, end_s) of the non-silent stretches of ``x``."""
    hop = int(0.05 * rate)
    active = [np.abs(x[i:i + hop]).max() > level for i in range(0, len(x) - hop + 1, hop)]
    segments, start, last = [], None, None
    for i, a in enumerate(active):
        if a:
            start = i if start is None else start
            last = i
        elif start is not None and (i - last) * 0.05 >= min_gap_s:
            segments.append((start * 0.05, (last + 1) * 0.05))
            start = None
    if start is not None:
        segments.append((start * 0.05, (last + 1) * 0.05))
    return segments


def test_outputs_exist_and_no_partial_folder(sample_run):
    out, _ = sample_run
    for name in ("robot.wav", "user.wav", "conversation.wav", "flame.npz", "summary.json", "transcript.txt", "bag"):
        assert (out / name).exists(), name
    assert not out.with_name(out.name + ".partial").exists()


def test_robot_speech_is_recognisable_as_the_scripted_reply(sample_run):
    out, _ = sample_run
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    first = next(s for s in speech_segments(robot, rate) if s[1] - s[0] > 2.0)
    heard = set(transcribe(robot[int(first[0] * rate):int(first[1] * rate)], rate).split())
    expected = {"hello", "friendly", "nice", "meet", "you", "i", "am", "a"}
    assert len(heard & expected) >= 5, heard
    assert "hello" in DEFAULT_REPLIES[0].lower()


def test_duplex_behaviours_happen_in_the_sample(sample_run):
    out, layout = sample_run
    counters = json.loads((out / "summary.json").read_text())["counters"]
    assert counters["replies_started"] == 4  # one per user turn that asks for a reply
    assert counters["replies_interrupted"] == 1  # the barge-in
    assert counters["backchannels_played"] >= 1  # in the long turn's pause
    assert len(layout["turns"]) == 5


def test_flame_track_covers_the_session_at_25_fps(sample_run):
    out, _ = sample_run
    summary = json.loads((out / "summary.json").read_text())
    track = FlameTrack.load_npz(out / "flame.npz")
    assert len(track) == 2 * summary["frames"]
    steps = np.diff(track.stamp_ns)
    assert np.all(steps == FRAME_PERIOD_NS)
    # Output frame 0 is heard one frame plus the playout delay (which covers the actuator
    # lead) after input frame 0 was captured; robot.wav starts there too.
    assert track.stamp_ns[0] == T0 + summary["robot_lead_samples"] * 1_000_000_000 // 24000
    assert track.stamp_ns[0] >= T0 + 80_000_000
    assert np.array_equal(track.sequence, np.arange(len(track)))
    assert np.all(track.source == int(FrameSource.PROCEDURAL))
    for name in ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids"):
        assert np.isfinite(getattr(track, name)).all()
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    lead = summary["robot_lead_samples"]
    assert len(track) * FRAME_PERIOD_NS / 1e9 >= (len(robot) - lead) / rate  # the face covers all speech


def test_jaw_follows_the_robot_voice(sample_run):
    out, _ = sample_run
    track = FlameTrack.load_npz(out / "flame.npz")
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    hop = rate // 25
    lead = json.loads((out / "summary.json").read_text())["robot_lead_samples"]  # first face frame
    env = np.array([np.sqrt(np.mean(robot[lead + i * hop: lead + (i + 1) * hop] ** 2)) if lead + (i + 1) * hop <= len(robot) else 0.0
                    for i in range(len(track))])
    jaw = track.jaw_pose[:, 0]
    speaking = env > 0.01
    assert jaw[speaking].mean() > 3 * max(jaw[~speaking].mean(), 1e-3)
    lags = range(-3, 4)
    corr = [np.corrcoef(np.roll(jaw, -k), env)[0, 1] for k in lags]
    assert max(corr) > 0.5 and abs(list(lags)[int(np.argmax(corr))]) <= 1


def test_bag_opens_with_anyreader_and_has_the_expected_counts(sample_run):
    out, _ = sample_run
    frames = json.loads((out / "summary.json").read_text())["frames"]
    with AnyReader([out / "bag"]) as reader:  # no types registered by hand
        conns = {c.topic: c for c in reader.connections}
        assert conns["/audio/in"].msgtype == "facebot/msg/AudioChunk"
        assert conns["/audio/out"].msgtype == "facebot/msg/AudioChunk"
        assert conns["/face/flame"].msgtype == "facebot/msg/FlameParams"
        counts = {t: c.msgcount for t, c in conns.items()}
        assert counts["/audio/in"] == frames and counts["/audio/out"] == frames
        assert counts["/face/flame"] == 2 * frames
        first = {}
        for conn, _, raw in reader.messages(connections=list(conns.values())):
            if conn.topic not in first:
                first[conn.topic] = reader.deserialize(raw, conn.msgtype)
    audio_in = first["/audio/in"]
    assert (audio_in.sample_rate, audio_in.channels, audio_in.encoding) == (24000, 1, "S16LE")
    assert len(audio_in.data) == 1920 * 2
    assert first["/face/flame"].source == 1 and len(first["/face/flame"].expression) == 50


def test_barge_in_in_the_recording(sample_run):
    """The robot's voice is gone within 80 ms of the VAD declaring the user's speech."""
    out, layout = sample_run
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    with AnyReader([out / "bag"]) as reader:
        conn = [c for c in reader.connections if c.topic == "/dialogue/state"]
        barge = [reader.deserialize(raw, c.msgtype).header for c, _, raw in reader.messages(connections=conn)
                 if reader.deserialize(raw, c.msgtype).barge_in]
    assert len(barge) == 1
    heard_at = (barge[0].stamp.sec * 10**9 + barge[0].stamp.nanosec - T0) / 1e9
    turn = next(t for t in layout["turns"] if t["purpose"] == "barge_in")
    assert turn["start_s"] < heard_at < turn["start_s"] + 0.3
    before = robot[int((heard_at - 0.3) * rate):int((heard_at - 0.05) * rate)]
    after = robot[int((heard_at + 0.003) * rate):int((heard_at + 0.5) * rate)]
    assert np.abs(before).max() > 0.05  # the robot was talking
    assert np.abs(after).max() < 1e-4  # and stopped


def load_commands(out):
    import csv

    rows = list(csv.DictReader(open(out / "joints.csv")))
    joints = [c[:-4] for c in rows[0] if c.endswith(".pos")]
    arr = lambda key: np.array([float(r[key]) for r in rows])  # noqa: E731
    return rows, joints, arr


def test_jaw_command_follows_the_heard_voice_within_one_face_frame(sample_run):
    """Cross-correlation of the robot's voice envelope (as heard) and the commanded jaw,
    shifted by the configured lead: the peak must be within +-40 ms."""
    out, _ = sample_run
    _, _, col = load_commands(out)
    lead_s = json.loads((out / "summary.json").read_text())["head"]["lead_ms"] / 1000.0
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    hop = rate // 100
    n = len(robot) // hop
    env = np.sqrt((robot[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    t = np.arange(n) * 0.01 + 0.005
    jaw = np.interp(t, col("send_time_s") + lead_s, col("jaw.pos"), left=0.0, right=0.0)
    e, j = (env - env.mean()) / env.std(), (jaw - jaw.mean()) / jaw.std()
    lags = np.arange(-20, 21)  # +-200 ms in 10 ms steps
    corr = [np.mean(e[max(0, -k):n - max(0, k)] * j[max(0, k):n - max(0, -k)]) for k in lags]
    best = int(lags[int(np.argmax(corr))]) * 10
    print(f"jaw command vs heard voice: lag {best} ms (negative = jaw leads), r = {max(corr):.2f}")
    assert abs(best) <= 40 and max(corr) > 0.5


def test_joint_commands_respect_the_reference_head_limits(sample_run):
    from facebot.robot.head_config import load_head_config

    out, _ = sample_run
    rows, joints, col = load_commands(out)
    cfg = {j.name: j for j in load_head_config("config/head_reference.yaml").joints}
    assert set(joints) == set(cfg) and len(rows) > 1000
    send = col("send_time_s")
    assert np.allclose(np.diff(send), 0.01, atol=1e-4)  # 100 Hz
    assert np.allclose(col("show_time_s") - send, 0.04, atol=1e-4)  # the configured lead
    for name, j in cfg.items():
        pos, vel = col(f"{name}.pos"), col(f"{name}.vel")
        assert pos.min() >= j.lower - 1e-6 and pos.max() <= j.upper + 1e-6, name
        assert np.abs(vel).max() <= j.max_velocity + 1e-6, name


def test_bag_has_joint_states_and_controller_commands(sample_run):
    out, _ = sample_run
    rows, joints, _ = load_commands(out)
    with AnyReader([out / "bag"]) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert conns["/joint_states"].msgtype == "sensor_msgs/msg/JointState"
        assert conns["/head_position_controller/commands"].msgtype == "std_msgs/msg/Float64MultiArray"
        assert conns["/head_trajectory_controller/joint_trajectory"].msgtype == "trajectory_msgs/msg/JointTrajectory"
        assert conns["/joint_states"].msgcount == len(rows)
        assert conns["/head_position_controller/commands"].msgcount == len(rows)
        for conn, _, raw in reader.messages(connections=[conns["/head_trajectory_controller/joint_trajectory"]]):
            traj = reader.deserialize(raw, conn.msgtype)
            break
    assert list(traj.joint_names) == joints and len(traj.points) >= 1


def test_head_is_timed_as_its_own_stage(sample_run):
    """The session ticks the head driver itself; recording the commands is billed to "record"."""
    out, _ = sample_run
    latency = json.loads((out / "summary.json").read_text())["latency_ms"]
    assert {"head", "record", "step"} <= set(latency)


def test_face_video_and_plot(sample_run):
    import av

    out, _ = sample_run
    robot, rate = sf.read(out / "robot.wav", dtype="float32")
    with av.open(str(out / "face.mp4")) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (480, 480)
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert abs(video.frames / 25.0 - len(robot) / rate) <= 0.05
        assert audio.codec_context.sample_rate == rate
    png = (out / "session.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
