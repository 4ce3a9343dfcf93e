"""Pinhole camera intrinsics: pixels <-> rays in the camera's optical frame.

Optical frame (REP 103 / sensor_msgs/CameraInfo): x right, y down, z forward, metres. Without
a CameraInfo the intrinsics come from a horizontal field of view (default 60 degrees, a
typical webcam) and the image size, with the principal point at the centre. Distortion is
ignored: a face's position steers the gaze within a few degrees, far below what lens
distortion changes away from the image corners.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_HFOV_DEG = 60.0
IPD_M = 0.063  # mean adult interpupillary distance: turns the eyes' pixel distance into depth


@dataclass(frozen=True)
class CameraIntrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"camera intrinsics need finite fx, fy > 0, got {vals}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> "CameraIntrinsics":
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(f, f, width / 2.0, height / 2.0, int(width), int(height))

    @classmethod
    def from_k(cls, k, width: int, height: int) -> "CameraIntrinsics":
        """From CameraInfo's row-major 3x3 ``k``; an all-zero K (uncalibrated) raises."""
        k = np.asarray(k, np.float64).reshape(9)
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "CameraIntrinsics":
        """The same lens for an image resized to ``width x height``."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height))

    def ray(self, u: float, v: float) -> np.ndarray:
        """Unit direction of pixel (u, v) in the optical frame."""
        d = np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0])
        return d / np.linalg.norm(d)

    def project(self, point) -> tuple[float, float]:
        """Pixel of a point in the optical frame (z > 0)."""
        x, y, z = np.asarray(point, np.float64)
        return self.fx * x / z + self.cx, self.fy * y / z + self.cy

    def face_point(self, u: float, v: float, ipd_px: float, yaw_rad: float = 0.0) -> np.ndarray:
        """3-D position (metres, optical frame) of a face whose eye midpoint is at (u, v) and
        whose pupils are ``ipd_px`` apart; a head turned by ``yaw_rad`` shows them closer."""
        foreshortened = max(ipd_px, 1e-3) / max(math.cos(min(abs(yaw_rad), 1.2)), 0.3)
        depth = self.fx * IPD_M / foreshortened
        d = np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0])
        return d * depth
