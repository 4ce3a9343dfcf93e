"""Where the robot should look: the user's face position -> neck and eye angles.

The face position comes in the camera's optical frame (``CameraIntrinsics.face_point``: the
eye midpoint's pixel, depth from the pupils' distance). The camera sits in the head
(``camera_optical_frame`` in the URDF), so its pose in ``base_link`` depends on the neck
angles at the image's capture time: the caller passes the neck pose the robot had then (the
FLAME ``neck_pose`` it was showing; the reference head maps pitch, yaw, roll 1:1 onto
neck_pitch, neck_yaw, neck_roll).

The target is split between the neck and the eyes: the neck turns ``neck_share`` of the way
(people turn the head for large shifts and the eyes for the rest), clipped to the neck limits;
the eyes then aim exactly at the target from where they are with that neck pose (eye yaw
about the head's z, then pitch about y, as the URDF's eye_yaw / eye_pitch joints), clipped to
the eye limits. Angles are FLAME's: index 0 pitch (+ = down), 1 yaw (+ = the robot's left).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facebot.perception.head_geometry import CAMERA_FRAME, EYE_FRAME, GAZE_FRAME, HeadGeometry

NECK_JOINTS = ("neck_pitch", "neck_yaw", "neck_roll")  # FLAME neck_pose order 0, 1, 2


@dataclass(frozen=True)
class GazeTarget:
    neck: np.ndarray  # (3,) FLAME neck_pose (pitch, yaw, roll = 0)
    eyes: np.ndarray  # (2,) pitch, yaw of both eyes (relative to the head)
    point_base: np.ndarray  # (3,) the target in base_link (m)


def _neck_q(neck_pose) -> dict[str, float]:
    n = np.asarray(neck_pose, np.float64).reshape(3)
    return {name: float(n[i]) for i, name in enumerate(NECK_JOINTS)}


def _angles(v: np.ndarray) -> np.ndarray:
    """(pitch + down, yaw + left) of a direction in a frame with x forward, y left, z up."""
    return np.array([math.atan2(-v[2], math.hypot(v[0], v[1])), math.atan2(v[1], v[0])])


class Attention:
    def __init__(self, geometry: HeadGeometry | None = None, neck_share: float = 0.6,
                 neck_limit=(0.25, 0.30), eye_limit=(0.25, 0.35)) -> None:
        if not 0.0 <= neck_share <= 1.0:
            raise ValueError(f"neck_share must be in [0, 1], got {neck_share}")
        self.geometry = geometry or HeadGeometry()
        self.neck_share = float(neck_share)
        self.neck_limit = np.asarray(neck_limit, np.float64)
        self.eye_limit = np.asarray(eye_limit, np.float64)

    def point_in_base(self, point_optical, neck_at_capture=(0.0, 0.0, 0.0)) -> np.ndarray:
        cam = self.geometry.pose(CAMERA_FRAME, _neck_q(neck_at_capture))
        return cam[:3, :3] @ np.asarray(point_optical, np.float64) + cam[:3, 3]

    def eye_angles(self, point_base, neck_pose) -> np.ndarray:
        """Eye (pitch, yaw) that aim the line of sight at ``point_base`` with this neck pose."""
        q = _neck_q(neck_pose)
        head = self.geometry.pose(GAZE_FRAME, q)
        pivot = self.geometry.pose(EYE_FRAME, q)[:3, 3]
        return _angles(head[:3, :3].T @ (np.asarray(point_base) - pivot))

    def target(self, point_optical, neck_at_capture=(0.0, 0.0, 0.0)) -> GazeTarget:
        p = self.point_in_base(point_optical, neck_at_capture)
        total = self.eye_angles(p, (0.0, 0.0, 0.0))
        neck2 = np.clip(self.neck_share * total, -self.neck_limit, self.neck_limit)
        neck = np.array([neck2[0], neck2[1], 0.0])
        eyes = np.clip(self.eye_angles(p, neck), -self.eye_limit, self.eye_limit)
        return GazeTarget(neck.astype(np.float32), eyes.astype(np.float32), p)
