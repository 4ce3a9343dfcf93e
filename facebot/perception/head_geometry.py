"""Where the camera and the eyes are on the robot's head: forward kinematics of the URDF.

Reads the head's URDF (default: ``urdf/facebot_head.urdf`` of the installed package) with the standard
library's XML parser and chains the fixed and revolute joints from ``base_link`` to a link
(URDF conventions: ``origin xyz`` then ``rpy`` as fixed-axis roll-pitch-yaw, revolute joints
about ``axis``). Only what the gaze needs: link poses for given joint angles. A URDF without
the camera or eye links is refused with the missing link named.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from facebot.package_files import share_path

DEFAULT_URDF = share_path("urdf", "facebot_head.urdf")  # checkout, colcon or pip install
CAMERA_FRAME = "camera_optical_frame"
EYE_FRAME = "eye_pitch_link"  # the gaze drive: its x axis is the line of sight
GAZE_FRAME = "head_link"  # the eye joints' parent: eye angles are measured in it


class HeadGeometryError(ValueError):
    """A URDF that cannot be used; one line."""


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str
    parent: str
    xyz: np.ndarray
    rot: np.ndarray
    axis: np.ndarray


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()], np.float64)


class HeadGeometry:
    def __init__(self, urdf: str | Path | None = None) -> None:
        path = Path(urdf) if urdf else DEFAULT_URDF
        if not path.is_file():
            raise HeadGeometryError(f"{path}: no such URDF file")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as err:
            raise HeadGeometryError(f"{path}: not valid XML ({err})") from None
        self.path = path
        self._by_child: dict[str, _Joint] = {}
        for j in root.findall("joint"):
            o = j.find("origin")
            ax = j.find("axis")
            child = j.find("child").get("link")
            self._by_child[child] = _Joint(
                j.get("name"), j.get("type"), j.find("parent").get("link"),
                _floats(o.get("xyz") if o is not None else None, "0 0 0"),
                Rotation.from_euler("xyz", _floats(o.get("rpy") if o is not None else None, "0 0 0")).as_matrix(),
                _floats(ax.get("xyz") if ax is not None else None, "1 0 0"))
        for link in (CAMERA_FRAME, EYE_FRAME, GAZE_FRAME):
            if link not in self._by_child:
                raise HeadGeometryError(f"{path}: no link {link!r} (the gaze needs the camera and the eyes)")

    def pose(self, link: str, q: dict[str, float] | None = None) -> np.ndarray:
        """4x4 pose of ``link`` in ``base_link`` for joint angles ``q`` (missing: 0)."""
        q = q or {}
        chain = []
        while link in self._by_child:
            j = self._by_child[link]
            chain.append(j)
            link = j.parent
        t = np.eye(4)
        for j in reversed(chain):
            step = np.eye(4)
            step[:3, :3] = j.rot
            step[:3, 3] = j.xyz
            if j.kind in ("revolute", "continuous") and q.get(j.name, 0.0):
                r = np.eye(4)
                r[:3, :3] = Rotation.from_rotvec(j.axis / np.linalg.norm(j.axis) * q[j.name]).as_matrix()
                step = step @ r
            t = t @ step
        return t
