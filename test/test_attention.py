"""The robot's gaze toward the user: camera pixel -> point -> neck + eye angles, checked by
forward kinematics of the head URDF (an independent implementation, test_urdf.Robot); the
procedural face turning to the user; the blend onto the model's own face."""
from __future__ import annotations

import math

import numpy as np
import pytest

from facebot.face.cues import FaceCue
from facebot.face.flame import FlameFrame, FrameSource
from facebot.face.procedural import ProceduralFace, within_bounds
from facebot.perception.attention import Attention
from facebot.perception.camera import CameraIntrinsics
from test_urdf import URDF_FILE, Robot

CAM = CameraIntrinsics.from_fov(640, 480, 60.0)


@pytest.fixture(scope="module")
def robot():
    return Robot.from_file(URDF_FILE)


def joints(target):
    return {"neck_pitch": float(target.neck[0]), "neck_yaw": float(target.neck[1]),
            "eye_pitch": float(target.eyes[0]), "eye_yaw": float(target.eyes[1])}


def seen_from(robot, point_base, q=None):
    """The optical-frame coordinates and pixel of a point, for a head posed by ``q``."""
    cam = robot.pose("camera_optical_frame", q or {})
    p = cam[:3, :3].T @ (np.asarray(point_base) - cam[:3, 3])
    return p, CAM.project(p)


def miss_distance(robot, target, point_base) -> float:
    """How far the eyes' line of sight (eye_pitch_link's x axis) passes from the point."""
    pose = robot.pose("eye_pitch_link", joints(target))
    origin, axis = pose[:3, 3], pose[:3, 0]
    d = np.asarray(point_base) - origin
    assert d @ axis > 0, "looking away"
    return float(np.linalg.norm(d - (d @ axis) * axis))


@pytest.mark.parametrize("point", [(1.0, 0.0, 0.21), (1.0, 0.25, 0.3), (0.8, -0.3, 0.1),
                                   (1.5, 0.4, 0.45), (0.6, 0.1, 0.05)])
def test_the_eyes_look_at_the_user_seen_by_the_camera(robot, point):
    p_opt, (u, v) = seen_from(robot, point)
    assert 0 <= u < 640 and 0 <= v < 480, "the user is in view"
    # the same point as perception gives it: the pixel and the depth from the pupils' distance
    ipd_px = CAM.fx * 0.063 / p_opt[2]
    got = CAM.face_point(u, v, ipd_px)
    assert np.allclose(got, p_opt, atol=1e-6)
    target = Attention().target(got)
    assert np.allclose(target.point_base, point, atol=1e-6)
    assert miss_distance(robot, target, point) < 0.005  # within 5 mm at the user
    assert abs(target.neck[1]) > 0.2 * abs(math.atan2(point[1], point[0]))  # the neck takes a share


def test_a_head_turned_when_the_image_was_taken_sees_the_same_point(robot):
    point = (1.2, 0.3, 0.25)
    q = {"neck_yaw": 0.2, "neck_pitch": 0.1}
    p_opt, _ = seen_from(robot, point, q)
    target = Attention().target(p_opt, neck_at_capture=(0.1, 0.2, 0.0))
    assert np.allclose(target.point_base, point, atol=1e-6)
    assert miss_distance(robot, target, point) < 0.005


def test_targets_beyond_reach_stop_at_the_limits_on_the_right_side():
    a = Attention()
    far_left = a.target(a.geometry.pose("camera_optical_frame")[:3, :3].T @ np.array([0.2, 2.0, 0.0]))
    assert far_left.neck[1] == pytest.approx(0.30) and far_left.eyes[1] == pytest.approx(0.35)
    below = a.target(np.array([0.0, 3.0, 0.5]))  # far below the camera (optical y = down)
    assert below.neck[0] == pytest.approx(0.25) and below.eyes[0] == pytest.approx(0.25)


def cue(look, user_speaking=False, robot_speaking=False):
    return FaceCue(robot_audio=np.zeros(1920, np.float32), user_speaking=user_speaking,
                   user_speech_prob=0.9 if user_speaking else 0.0, robot_speaking=robot_speaking,
                   look_at=look)


def run_face(steps, look, **kw):
    face = ProceduralFace()
    frames = []
    for _ in range(steps):
        frames += face.step(cue(look, **kw))
    return face, frames


def test_the_procedural_face_turns_to_the_user_and_looks_back_when_they_speak():
    look = (np.array([0.05, 0.2, 0.0]), np.array([0.03, 0.12]))
    _, listening = run_face(25, look, user_speaking=True)  # 2 s
    assert all(within_bounds(f) for f in listening)
    late = listening[-10:]
    neck_yaw = np.mean([f.neck_pose[1] for f in late])
    eye_yaw = np.mean([f.eye_pose[1] for f in late])
    assert abs(neck_yaw - 0.2) < 0.03 and abs(eye_yaw - 0.12) < 0.04  # fully on the user
    _, speaking = run_face(25, look, robot_speaking=True)
    sp_yaw = np.mean([f.neck_pose[1] for f in speaking[-10:]])
    assert 0.6 * 0.2 - 0.04 < sp_yaw < 0.2 - 0.02  # partly, while the robot talks
    _, none = run_face(25, None, user_speaking=True)
    assert abs(np.mean([f.neck_pose[1] for f in none[-10:]])) < 0.03  # nobody there: centre


def test_bad_look_targets_are_ignored_and_bounds_hold():
    for bad in [(np.array([np.nan, 0, 0]), np.zeros(2)), ("x", 3), (np.ones(3) * 9, np.ones(2) * 9)]:
        _, frames = run_face(10, bad, user_speaking=True)
        assert all(within_bounds(f) and f.is_finite() for f in frames)


def test_the_model_face_gets_the_gaze_as_a_switchable_blend():
    from facebot.pipeline.backend import DuplexOutput, SpeechBackend
    from facebot.pipeline.duplex import DuplexLoop
    from facebot.config.loop import LoopConfig
    from facebot.audio.framing import AudioFrame
    from facebot.perception.user_perception import UserPerception

    class ModelFace(SpeechBackend):
        def reset(self, seed=0):
            pass

        def step(self, inp):
            self.user_flame = inp.user_flame
            return DuplexOutput(audio=np.zeros(1920, np.float32),
                                flame=[FlameFrame(source=FrameSource.MODEL) for _ in range(2)])

    def run(blend):
        perception = UserPerception(detect=False)
        loop = DuplexLoop(ModelFace(), LoopConfig(model_face_attention=blend), perception=perception)
        user = np.array([1.0, -0.4, 0.2])  # in base_link: on the robot's right
        geometry = perception.attention.geometry
        yaws, neck = [], np.zeros(3)
        for i in range(15):
            t = i * 80_000_000
            q = {"neck_pitch": neck[0], "neck_yaw": neck[1], "neck_roll": neck[2]}
            cam = geometry.pose("camera_optical_frame", q)  # where the camera looks now
            seen = cam[:3, :3].T @ (user - cam[:3, 3])
            perception.observe_frame(FlameFrame(stamp_ns=t, source=FrameSource.PERCEIVED), seen)
            r = loop.step(AudioFrame(np.zeros(1920, np.float32), t, i))
            neck = r.flame[-1].neck_pose
            yaws.append(neck[1])
            assert all(f.source == FrameSource.MODEL for f in r.flame)
        assert loop.backend.user_flame is not None and len(loop.backend.user_flame) == 2
        return yaws

    off, on = run(0.0), run(1.0)
    assert max(abs(y) for y in off) == 0.0  # the model's face untouched
    # turned to the robot's right, toward the user (its share of atan(0.4 / 1.0), eyes the rest)
    assert -0.30 <= on[-1] < -0.1
