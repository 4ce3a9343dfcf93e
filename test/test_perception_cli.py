"""`facebot run --video` and `facebot bag --camera-topic` see the user: the perceived face
reaches the model's user stream (recorded on /face/user_flame) and the robot looks at her."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("skimage")

import face_images as fi  # noqa: E402
from facebot import cli, interfaces  # noqa: E402
from facebot.audio.espeak import EspeakVoice  # noqa: E402
from facebot.bagio import BagRecorder  # noqa: E402
from facebot.face.flame import FlameTrack, FrameSource  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

T0 = 1_700_000_000_000_000_000
FPS = 10
FRAMES = 40  # 4 s; she is away from 1.5 s to 2.5 s


def frames():
    """320x240: her head on the left of the picture (the robot's left), away for a second."""
    head = cv2.resize(fi.astronaut()[0:300, 80:380], (200, 200), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(FRAMES):
        canvas = np.full((240, 320, 3), 90, np.uint8)
        if not 15 <= i < 25:
            canvas[20:220, 0:200] = head
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def speech():
    clip = EspeakVoice(voice="en-us+m3").synthesize("Hello robot, how are you?", sample_rate=24000)
    return np.concatenate([np.zeros(2400, np.float32), clip.audio, np.zeros(24000, np.float32)])


def user_flames(bag):
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/face/user_flame"]
        return [(t, interfaces.flame_from_msg(reader.deserialize(raw, c.msgtype)))
                for c, t, raw in reader.messages(connections=conns)]


def check(out, with_images: int):
    summary = json.loads((out / "summary.json").read_text())["counters"]
    assert summary["user_face_with_face"] == with_images
    assert summary["user_face_steps_with_face"] > 0 and summary["user_face_steps_without_face"] > 0
    got = user_flames(out / "bag")
    assert got and all(f.source == FrameSource.PERCEIVED and f.stamp_ns == t for t, f in got)
    stamps = [t for t, _ in got]
    assert all((s - T0) % 40_000_000 == 0 for s in stamps)  # on the model's 25 fps clock
    assert not any(T0 + 1_650_000_000 < s < T0 + 2_500_000_000 for s in stamps)  # none while away
    robot = FlameTrack.load_npz(out / "flame.npz")
    seen = (robot.stamp_ns > T0 + 800_000_000) & (robot.stamp_ns < T0 + 1_500_000_000)
    assert robot.neck_pose[seen, 1].mean() > 0.04  # the robot turned to its left, toward her
    return summary


def test_run_with_a_video_sees_the_user(tmp_path, speech):
    import soundfile as sf

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 240))
    for img in frames():
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    sf.write(tmp_path / "in.wav", speech, 24000)
    out = tmp_path / "out"
    rc = cli.main(["run", "--input", str(tmp_path / "in.wav"), "--video", str(video), "--out", str(out),
                   "--t0-ns", str(T0), "--no-progress", "--no-video", "--head", "none"])
    assert rc == 0
    check(out, with_images=FRAMES - 10)


def test_bag_with_a_camera_topic_sees_the_user(tmp_path, speech):
    path = tmp_path / "robot_bag"
    topics = {"/mic": "facebot/msg/AudioChunk", "/cam": "sensor_msgs/msg/Image"}
    image_cls = interfaces.msg_class("sensor_msgs/msg/Image")
    imgs = frames()
    with BagRecorder(path, topics) as bag:
        for start in range(0, len(speech), 480):
            stamp = T0 + start * 1_000_000_000 // 24000
            bag.write("/mic", stamp, interfaces.audio_to_msg(speech[start:start + 480], 24000, stamp))
        for i, img in enumerate(imgs):
            stamp = T0 + i * 1_000_000_000 // FPS
            bgr = np.ascontiguousarray(img[:, :, ::-1])
            msg = image_cls(header=interfaces.make_header(stamp, "camera_optical_frame"), height=240,
                            width=320, encoding="bgr8", is_bigendian=0, step=320 * 3,
                            data=np.frombuffer(bgr.tobytes(), np.uint8))
            bag.write("/cam", stamp, msg)
    out = tmp_path / "out"
    rc = cli.main(["bag", str(path), "--audio-topic", "/mic", "--camera-topic", "/cam", "--out", str(out),
                   "--no-progress", "--no-video", "--head", "none"])
    assert rc == 0
    check(out, with_images=FRAMES - 10)
