"""The user's face as FLAME frames: from a detected face (landmarks, blendshapes, head
transform) to our FLAME layout, smoothed, causal, stamped with the image's capture time.

Per face (``face_to_flame``):

* **neck_pose**, the head's rotation as axis-angle in FLAME's axes (x the subject's left,
  y up, z out of the face; + pitch = chin down, + yaw = turn to the subject's left, + roll =
  tilt toward the subject's right shoulder... i.e. the image's right side rises). MediaPipe's
  transformation matrix is in a camera frame (x right, y up, z toward the viewer) whose axes
  coincide with FLAME's for a face looking into the lens, so its rotation is the pose **in the
  camera frame** (``UserFace.neck_pose_camera``). The frame's ``neck_pose`` is the pose
  **relative to the robot**: relative to a face at the same place looking straight at the
  camera (the camera sits in the robot's forehead, see urdf/), which is what a partner's head
  pose means in dyadic data: 0 = looking at the other person.
* **jaw_pose[0]** and **expression**: the fitted blendshape map (``facebot.perception.blendshape_map``).
* **eyelids** ``[left, right]``: ``eyeBlink{Left,Right}`` (the subject's sides) rescaled so that
  MediaPipe's resting ~0.05 reads open and ~0.75 closed.
* **eye_pose** ``[left(3), right(3)]``: gaze from ``eyeLook{Up,Down,In,Out}`` (pitch + = down,
  yaw + = toward the subject's left), ``GAZE_GAIN_RAD`` per unit score.

``UserFlameEstimator`` adds the one-euro smoothing (causal: each output depends only on this
and earlier images), a reset after the face has been lost for ``lost_after_s``, the choice of
one face among several (``FaceSelector``), and the face's position for the robot's gaze.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from facebot.perception.blendshape_map import BlendshapeMap, default_map
from facebot.perception.camera import CameraIntrinsics
from facebot.face.flame import N_EXPRESSION, FlameFrame, FrameSource
from facebot.perception.landmarker import BLENDSHAPE_INDEX as _B, Detection, DetectedFace
from facebot.robot.filters import OneEuroFilter

GAZE_GAIN_RAD = np.array([0.45, 0.6])  # pitch, yaw per unit eyeLook score
EYELID_OPEN, EYELID_CLOSED = 0.05, 0.75
JAW_MAX_RAD = 0.5
EXPRESSION_LIMIT = 3.0


@dataclass
class UserFace:
    """One perceived user face: the FLAME frame plus where the face is."""

    frame: FlameFrame  # stamped with the image's capture time, source PERCEIVED
    neck_pose_camera: np.ndarray  # (3,) axis-angle in the camera frame
    position: np.ndarray  # (3,) eye midpoint in the camera's optical frame (x right, y down, z fwd), m
    pixel: tuple[float, float]  # eye midpoint in the image
    index: int  # which of the image's faces
    n_faces: int
    rule: str  # why this face: "only", "speaking" or "centre"


def _gl_ray_rotation(position_optical: np.ndarray) -> np.ndarray:
    """Rotation taking FLAME/GL +z (out of the face) to the direction from the face to the camera."""
    p = np.asarray(position_optical, np.float64)
    to_cam_gl = -np.array([p[0], -p[1], -p[2]]) / max(np.linalg.norm(p), 1e-9)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, to_cam_gl)
    s, c = np.linalg.norm(axis), float(np.dot(z, to_cam_gl))
    if s < 1e-12:
        return np.eye(3)
    return Rotation.from_rotvec(axis / s * math.atan2(s, c)).as_matrix()


def head_rotations(face: DetectedFace, position_optical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(axis-angle in the camera frame, axis-angle relative to looking at the camera)."""
    r_cam = face.transform[:3, :3]
    u, _, vt = np.linalg.svd(r_cam)  # re-orthonormalise (the matrix may carry scale)
    r_cam = u @ vt
    if np.linalg.det(r_cam) < 0:
        r_cam = u @ np.diag([1, 1, -1]) @ vt
    r_rel = _gl_ray_rotation(position_optical).T @ r_cam
    return Rotation.from_matrix(r_cam).as_rotvec(), Rotation.from_matrix(r_rel).as_rotvec()


def eyes(face: DetectedFace) -> tuple[np.ndarray, np.ndarray]:
    """(eye_pose [6], eyelids [2]) from the eye blendshapes (the subject's left first)."""
    b = face.blendshapes

    def look(side: str, outward_is_left: bool) -> np.ndarray:
        pitch = b[_B["eyeLookDown" + side]] - b[_B["eyeLookUp" + side]]
        out_in = b[_B["eyeLookOut" + side]] - b[_B["eyeLookIn" + side]]
        yaw = out_in if outward_is_left else -out_in
        return np.array([pitch * GAZE_GAIN_RAD[0], yaw * GAZE_GAIN_RAD[1], 0.0])

    eye = np.concatenate([look("Left", True), look("Right", False)])
    blink = np.array([b[_B["eyeBlinkLeft"]], b[_B["eyeBlinkRight"]]])
    lids = np.clip((blink - EYELID_OPEN) / (EYELID_CLOSED - EYELID_OPEN), 0.0, 1.0)
    return eye.astype(np.float32), lids.astype(np.float32)


def face_to_flame(face: DetectedFace, camera: CameraIntrinsics, stamp_ns: int,
                  bmap: BlendshapeMap | None = None, n_expression: int = N_EXPRESSION):
    """(FlameFrame, neck_pose_camera, position): one face, unsmoothed."""
    bmap = bmap or default_map()
    u, v = face.eye_centre
    rough = camera.face_point(float(u), float(v), face.ipd_px)
    rv_cam, _ = head_rotations(face, rough)
    position = camera.face_point(float(u), float(v), face.ipd_px, yaw_rad=float(rv_cam[1]))
    rv_cam, rv_rel = head_rotations(face, position)
    jaw, expression = bmap(face.blendshapes)
    exp = np.zeros(n_expression, np.float32)
    n = min(n_expression, expression.shape[0])
    exp[:n] = np.clip(expression[:n], -EXPRESSION_LIMIT, EXPRESSION_LIMIT)
    eye, lids = eyes(face)
    frame = FlameFrame(expression=exp, jaw_pose=[float(np.clip(jaw, 0.0, JAW_MAX_RAD)), 0.0, 0.0],
                       neck_pose=rv_rel, eye_pose=eye, eyelids=lids, stamp_ns=int(stamp_ns),
                       source=FrameSource.PERCEIVED)
    return frame, rv_cam.astype(np.float32), position


class FaceSelector:
    """Picks the user among several faces. Rule: while the user is speaking (the VAD says
    so), the face whose mouth moves most (std of jawOpen over the last ``window`` images,
    faces followed by nearest position) if it moves clearly (std > ``min_motion``); otherwise,
    and while the user is silent, the face nearest the image centre. Larger-than-life
    heuristics (size, gaze) are left out on purpose: the nearest-centre face is the one the
    robot is already turned to, so the choice is stable."""

    def __init__(self, window: int = 12, min_motion: float = 0.04, match_frac: float = 0.15) -> None:
        self.window, self.min_motion, self.match_frac = window, min_motion, match_frac
        self._tracks: list[tuple[np.ndarray, deque]] = []

    def reset(self) -> None:
        self._tracks = []

    def _follow(self, det: Detection) -> list[float]:
        """Mouth motion per face of ``det``; updates the tracks."""
        radius = self.match_frac * max(det.width, det.height)
        new_tracks, motion = [], []
        free = list(self._tracks)
        for f in det.faces:
            c = f.eye_centre.astype(np.float64)
            hist: deque = deque(maxlen=self.window)
            if free:
                d = [float(np.linalg.norm(t[0] - c)) for t in free]
                j = int(np.argmin(d))
                if d[j] < radius:
                    hist = free.pop(j)[1]
            hist.append(float(f.blendshapes[_B["jawOpen"]]))
            new_tracks.append((c, hist))
            motion.append(float(np.std(hist)) if len(hist) >= 3 else 0.0)
        self._tracks = new_tracks
        return motion

    def choose(self, det: Detection, user_speaking: bool = False) -> tuple[int, str] | None:
        if not det.faces:
            self._tracks = []
            return None
        motion = self._follow(det)
        if len(det.faces) == 1:
            return 0, "only"
        if user_speaking:
            j = int(np.argmax(motion))
            others = [m for i, m in enumerate(motion) if i != j]
            if motion[j] > self.min_motion and motion[j] > 2.0 * max(others):
                return j, "speaking"
        centre = np.array([det.width / 2.0, det.height / 2.0])
        dist = [float(np.linalg.norm(f.eye_centre - centre)) for f in det.faces]
        return int(np.argmin(dist)), "centre"


@dataclass
class EstimatorConfig:
    min_cutoff_hz: float = 1.5  # one-euro: smoothing at rest
    beta: float = 0.3  # one-euro: less smoothing when the face moves fast
    lost_after_s: float = 0.5  # no face this long: the smoother restarts
    min_face_px: float = 24.0  # smaller faces (eye-to-eye < 1/3 of this) are ignored as unreliable
    hfov_deg: float = 60.0  # camera field of view when no intrinsics are given
    n_expression: int = N_EXPRESSION
    counters: dict = field(default_factory=dict)


_VEC = [("expression", None), ("jaw_pose", 3), ("neck_pose", 3), ("eye_pose", 6), ("eyelids", 2)]


class UserFlameEstimator:
    """Detections -> the user's smoothed FLAME frame (or None: no usable face)."""

    def __init__(self, config: EstimatorConfig | None = None, bmap: BlendshapeMap | None = None) -> None:
        self.config = config or EstimatorConfig()
        self.bmap = bmap or default_map()
        self.selector = FaceSelector()
        n = self.config.n_expression + 3 + 3 + 6 + 2 + 3
        self._filter = OneEuroFilter(n, self.config.min_cutoff_hz, self.config.beta)
        self._last_ns: int | None = None
        self.counts = {"images": 0, "faces": 0, "no_face": 0, "too_small": 0}

    def reset(self) -> None:
        self._filter.reset()
        self._last_ns = None
        self.selector.reset()

    def update(self, det: Detection, camera: CameraIntrinsics | None = None,
               user_speaking: bool = False) -> UserFace | None:
        c = self.config
        self.counts["images"] += 1
        if camera is None or (camera.width, camera.height) != (det.width, det.height):
            camera = (camera.scaled_to(det.width, det.height) if camera is not None
                      else CameraIntrinsics.from_fov(det.width, det.height, c.hfov_deg))
        usable = Detection([f for f in det.faces if f.size_px >= c.min_face_px], det.stamp_ns, det.width, det.height)
        if len(usable.faces) < len(det.faces):
            self.counts["too_small"] += len(det.faces) - len(usable.faces)
        pick = self.selector.choose(usable, user_speaking)
        if pick is None:
            self.counts["no_face"] += 1
            return None
        idx, rule = pick
        face = usable.faces[idx]
        frame, rv_cam, position = face_to_flame(face, camera, det.stamp_ns, self.bmap, c.n_expression)
        lost = self._last_ns is not None and (det.stamp_ns - self._last_ns) > c.lost_after_s * 1e9
        if lost or (self._last_ns is not None and det.stamp_ns <= self._last_ns):
            self._filter.reset()
        dt = 0.0 if self._last_ns is None else (det.stamp_ns - self._last_ns) / 1e9
        self._last_ns = det.stamp_ns
        vec = np.concatenate([np.asarray(getattr(frame, k), np.float64) for k, _ in _VEC] + [rv_cam])
        smooth, _ = self._filter(vec, dt)
        out, i = {}, 0
        for k, size in _VEC:
            size = c.n_expression if size is None else size
            out[k] = smooth[i:i + size]
            i += size
        self.counts["faces"] += 1
        frame = FlameFrame(**out, stamp_ns=det.stamp_ns, source=FrameSource.PERCEIVED)
        return UserFace(frame, smooth[i:i + 3].astype(np.float32), position, tuple(map(float, face.eye_centre)),
                        det.faces.index(face), len(det.faces), rule)
