"""The FLAME mesh view of the face display: a FLAME model's posed mesh drawn with OpenCV.

:func:`facebot.robot.display.face_renderer` picks it over the stylised ``FaceRenderer`` when the
display configuration names a converted FLAME model (``flame_model``).
"""
from __future__ import annotations

import math

import numpy as np

from facebot.face.flame import FlameFrame
from facebot.face.flame_mesh import FlameModel

__all__ = ["MeshRenderer"]


class MeshRenderer:
    """Orthographic front view of the FLAME mesh, flat Lambert shading, painter's algorithm.

    Triangles are sorted back to front by mean depth and filled with ``cv2.fillConvexPoly``
    (sub-pixel vertex positions, ``shift=4``). Colours: skin for the head, and for triangles
    skinned mostly to an eye joint, sclera / iris / pupil by the angle from the eye's forward
    axis in the template (so the iris follows ``eye_pose``). Back faces (seen through the
    open mouth) are drawn in the mouth colour unless ``mesh.cull_backfaces``. The framing is
    fixed from the template's bounding box, so the head moves within a steady picture.
    """

    def __init__(self, model: FlameModel, config) -> None:
        """``config``: the display's ``FaceDisplayConfig`` (size, colours, ``mesh`` section)."""
        self.model = model
        self.config = config
        c = config
        m = c.mesh
        self.width, self.height = int(c.width), int(c.height)
        self._line = 16 if c.anti_aliasing and m.anti_aliasing else 8
        v = model.v_template
        lo, hi = v.min(axis=0), v.max(axis=0)
        extent = max(hi[0] - lo[0], hi[1] - lo[1], 1e-9)
        self._scale = min(self.width, self.height) * (1.0 - 2.0 * m.margin) / extent
        self._center = (lo + hi) / 2.0
        light = np.asarray(m.light_direction, np.float64)
        self._light = light / max(np.linalg.norm(light), 1e-12)
        self._colours = self._base_colours()
        self._back = np.asarray(c.colors.mouth, np.float64)
        self._bg = np.asarray(c.colors.background, np.uint8)

    def _base_colours(self) -> np.ndarray:
        c = self.config.colors
        model = self.model
        faces = model.faces
        colours = np.tile(np.asarray(c.skin, np.float64), (faces.shape[0], 1))
        tri_w = model.weights[faces].mean(axis=1)  # [F, 5]
        dominant = tri_w.argmax(axis=1)
        joints = model.joints(model.v_template)
        g = self.config.mesh
        for j in (3, 4):
            sel = np.nonzero((dominant == j) & (tri_w[:, j] > 0.5))[0]
            if not sel.size:
                continue
            centres = model.v_template[faces[sel]].mean(axis=1) - joints[j]
            d = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
            cos_fwd = d[:, 2]  # +z faces the viewer
            colours[sel] = c.eye
            colours[sel[cos_fwd > math.cos(g.iris_angle_rad)]] = c.iris
            colours[sel[cos_fwd > math.cos(g.pupil_angle_rad)]] = c.pupil
        return colours

    def project(self, verts: np.ndarray) -> np.ndarray:
        """``[V, 3]`` -> pixel coordinates ``[V, 2]`` (x right, y down) as float."""
        xy = np.empty((verts.shape[0], 2))
        xy[:, 0] = self.width / 2.0 + self._scale * (verts[:, 0] - self._center[0])
        xy[:, 1] = self.height / 2.0 - self._scale * (verts[:, 1] - self._center[1])
        return xy

    def render(self, frame: FlameFrame) -> np.ndarray:
        out = np.empty((self.height, self.width, 3), np.uint8)
        self.render_into(frame, out)
        return out

    def render_into(self, frame: FlameFrame, out: np.ndarray) -> np.ndarray:
        import cv2

        if out.shape != (self.height, self.width, 3) or out.dtype != np.uint8:
            raise ValueError(f"output buffer must be uint8 [{self.height}, {self.width}, 3], got {out.dtype} {list(out.shape)}")
        if not frame.is_finite():
            frame = FlameFrame.neutral(frame.expression.shape[0])
        verts = self.model.vertices(frame)
        faces = self.model.faces
        tri = verts[faces]  # [F, 3, 3]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(normals, axis=1)
        normals /= np.maximum(norm, 1e-20)[:, None]
        front = normals[:, 2] > 0
        m = self.config.mesh
        lambert = np.clip(normals @ self._light, 0.0, 1.0)
        shade = m.ambient + (1.0 - m.ambient) * lambert
        colours = self._colours * shade[:, None]
        colours[~front] = self._back * (0.6 + 0.4 * (1.0 - np.abs(normals[~front, 2])))[:, None]
        keep = (norm > 0) & (front if m.cull_backfaces else True)
        idx = np.nonzero(keep)[0]
        order = idx[np.argsort(tri[idx, :, 2].mean(axis=1), kind="stable")]
        pts = np.rint(self.project(verts) * 16.0).astype(np.int32)[faces[order]]
        cols = np.clip(np.rint(colours[order]), 0, 255).astype(np.int32).tolist()
        out[:] = self._bg
        line = self._line
        fill = cv2.fillConvexPoly
        for p, col in zip(pts, cols):
            fill(out, p, col, line, 4)
        return out
