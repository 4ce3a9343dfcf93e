"""The face display: a stylised face drawn from FLAME frames (numpy in, RGB image out).

``face_renderer(config)`` is the display's renderer: the FLAME mesh view
(:class:`facebot.robot.mesh_renderer.MeshRenderer`) when ``flame_model`` names a FLAME model
converted by ``facebot flame-convert``, else the stylised face described here.

``FaceRenderer(config).render(frame)`` returns an ``[H, W, 3]`` uint8 RGB image; it draws with
OpenCV (filled polygons with sub-pixel vertices, anti-aliased unless turned off) and takes
about a millisecond at 480 x 480 on one core (``bench/bench_renderer.py``).

What drives what (controls are read through ``facebot.face.controls.flame_to_controls`` with
the same basis the producer used; ``default_basis()`` unless one is passed):

============== =============================================================================
feature        driven by
============== =============================================================================
mouth opening  ``jaw_pose[0] / jaw_max_rad`` (plus a little for rounded lips), closed by
               ``lip_press``, reduced by ``lip_tuck``; teeth show in the upper part
mouth shape    ``smile`` and ``lip_stretch`` widen it and lift the corners; ``lip_round`` and
               ``lip_funnel`` narrow it, round the opening and thicken the lips;
               ``lip_press`` thins the lips
brows          ``brow_raise`` lifts them (and opens the eyes a little); ``brow_furrow`` lowers
               and draws in their inner ends
eyes           iris and pupil follow each eye's ``eye_pose`` (yaw -> x, pitch -> y, ``+``
               pitch = down, ``+`` yaw = towards the viewer's right, as in FLAME's frame);
               ``eyelids`` 0 open .. 1 closed
head           ``neck_pose`` shifts (yaw -> x, pitch -> y) and rolls the features a little;
               the face outline moves half as much, which reads as depth
============== =============================================================================

The robot's left eye (``eye_pose[:3]``, ``eyelids[0]``) is drawn on the viewer's right, as a
person's left eye appears to someone facing them. A frame with any non-finite value renders
exactly as the neutral face. Output is deterministic (same frame, same image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from facebot.config import ConfigError, load_yaml, section
from facebot.face.controls import CONTROL_INDEX, ControlBasis, default_basis, flame_to_controls
from facebot.face.flame import FlameFrame
from facebot.face.flame_mesh import FlameModel, FlameModelError
from facebot.robot.mesh_renderer import MeshRenderer

__all__ = [
    "DisplayColors",
    "DisplayGeometry",
    "MeshDisplayConfig",
    "FaceDisplayConfig",
    "FaceRenderer",
    "face_renderer",
    "load_display_config",
    "default_display_config_path",
]

Colour = tuple[int, int, int]


def _check_colours(obj) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        if (
            not isinstance(v, (tuple, list))
            or len(v) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)
        ):
            raise ValueError(f"colour {f.name} must be [R, G, B] integers 0..255, got {v!r}")
        setattr(obj, f.name, tuple(int(x) for x in v))


def _check_numbers(obj, lo: float, hi: float, names=None) -> None:
    for f in fields(obj):
        if names is not None and f.name not in names:
            continue
        v = getattr(obj, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{f.name} must be a number in [{lo}, {hi}], got {v!r}")


@dataclass
class DisplayColors:
    """RGB colours, ``[R, G, B]`` integers 0..255."""

    background: Colour = (18, 22, 30)
    skin: Colour = (236, 200, 170)
    eye: Colour = (250, 250, 248)  # sclera
    iris: Colour = (70, 120, 170)
    pupil: Colour = (12, 12, 16)
    highlight: Colour = (255, 255, 255)
    lid: Colour = (70, 45, 40)  # lash line / closed-eye line
    brow: Colour = (80, 55, 45)
    lip: Colour = (196, 100, 100)
    mouth: Colour = (60, 16, 24)  # mouth interior
    teeth: Colour = (244, 240, 230)

    def __post_init__(self) -> None:
        _check_colours(self)


@dataclass
class DisplayGeometry:
    """Sizes and positions as fractions of the picture's smaller side ``S``; positions are
    offsets from the picture's centre (negative y = up)."""

    face_width: float = 0.86  # skin-coloured face shape; 0 = none (features on the background)
    face_height: float = 0.94
    eye_spacing: float = 0.34  # between the eye centres
    eye_y: float = -0.09
    eye_width: float = 0.17
    eye_height: float = 0.12
    iris_size: float = 0.085  # diameter
    pupil_size: float = 0.038
    highlight_size: float = 0.016
    lid_rest: float = 0.08  # share of the eye the upper lid covers when "open"
    lid_thickness: float = 0.010
    brow_y: float = -0.225
    brow_length: float = 0.16
    brow_thickness: float = 0.024
    brow_arch: float = 0.018
    brow_raise: float = 0.05  # lift at brow_raise = 1
    brow_furrow: float = 0.035  # inner-end drop at brow_furrow = 1
    mouth_y: float = 0.2
    mouth_width: float = 0.26
    mouth_open_height: float = 0.17  # inner opening at jaw fully open
    lip_thickness: float = 0.028
    smile_curve: float = 0.06  # corner lift at smile = 1
    teeth_height: float = 0.03  # shown at most; never more than 30 % of the opening
    head_shift: float = 0.25  # feature shift per radian of neck yaw / pitch
    head_roll_gain: float = 1.0  # feature rotation per radian of neck roll

    def __post_init__(self) -> None:
        _check_numbers(self, -0.5, 2.0)
        _check_numbers(self, 0.0, 2.0, names={f.name for f in fields(self)} - {"eye_y", "brow_y", "mouth_y"})
        for name in ("eye_width", "eye_height", "iris_size", "mouth_width", "brow_thickness", "lip_thickness"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass
class MeshDisplayConfig:
    """The FLAME mesh view (``mesh_renderer.MeshRenderer``, drawn when ``flame_model`` is set)."""

    light_direction: tuple[float, float, float] = (0.35, 0.45, 1.0)  # towards the light (x right, y up, z viewer)
    ambient: float = 0.3
    margin: float = 0.06  # border around the template's bounding box, fraction of S
    cull_backfaces: bool = False  # True: faster, but the open mouth shows the background
    anti_aliasing: bool = False  # AA triangle edges leave faint seams between triangles
    iris_angle_rad: float = 0.42  # eyeball triangles within this angle of forward are iris
    pupil_angle_rad: float = 0.18

    def __post_init__(self) -> None:
        ld = self.light_direction
        if (
            not isinstance(ld, (tuple, list)) or len(ld) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in ld)
            or not any(ld)
        ):
            raise ValueError(f"light_direction must be 3 finite numbers, not all 0, got {ld!r}")
        self.light_direction = tuple(float(x) for x in ld)
        _check_numbers(self, 0.0, 1.0, names={"ambient"})
        _check_numbers(self, 0.0, 0.45, names={"margin"})
        _check_numbers(self, 0.0, math.pi / 2, names={"iris_angle_rad", "pupil_angle_rad"})
        for name in ("cull_backfaces", "anti_aliasing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")


@dataclass
class FaceDisplayConfig:
    """The face display (``config/face_display.yaml``, section ``display``)."""

    width: int = 480
    height: int = 480
    anti_aliasing: bool = True
    gaze_gain: float = 2.2  # iris shift per radian of eye rotation, in eye half-sizes
    colors: DisplayColors = field(default_factory=DisplayColors)
    geometry: DisplayGeometry = field(default_factory=DisplayGeometry)
    mesh: MeshDisplayConfig = field(default_factory=MeshDisplayConfig)
    # a FLAME model converted by `facebot flame-convert` (.npz): draw its mesh, not the stylised face
    flame_model: str | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 32 <= v <= 4096:
                raise ValueError(f"{name} must be an integer in [32, 4096] pixels, got {v!r}")
        if not isinstance(self.anti_aliasing, bool):
            raise ValueError("anti_aliasing must be true or false")
        g = self.gaze_gain
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 <= g <= 10:
            raise ValueError(f"gaze_gain must be in [0, 10], got {g!r}")
        for name, cls in (("colors", DisplayColors), ("geometry", DisplayGeometry), ("mesh", MeshDisplayConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}")
        if self.flame_model is not None and (not isinstance(self.flame_model, str) or not self.flame_model):
            raise ValueError(f"flame_model must be the path of a converted FLAME .npz, got {self.flame_model!r}")


def default_display_config_path() -> Path:
    from facebot.package_files import config_file

    return config_file("face_display.yaml")


def load_display_config(path: str | Path | None = None) -> FaceDisplayConfig:
    """``FaceDisplayConfig`` from a YAML file's ``display`` section; every key is checked. A
    relative ``flame_model`` path is taken from the YAML file's folder."""
    p = Path(path) if path is not None else default_display_config_path()
    data = load_yaml(p)
    unknown = sorted(set(data) - {"display"})
    if unknown:
        raise ConfigError(f"{p.name}: unknown section(s) {', '.join(unknown)} (known: display)")
    cfg = section(data, "display", FaceDisplayConfig, p)
    if cfg.flame_model is not None and not Path(cfg.flame_model).is_absolute():
        cfg = replace(cfg, flame_model=str(p.parent / cfg.flame_model))
    return cfg


def face_renderer(config: FaceDisplayConfig, flame: FlameModel | None = None) -> FaceRenderer | MeshRenderer:
    """The display's renderer: the FLAME mesh view when ``config.flame_model`` is set, else the
    stylised face. ``flame``: that model already loaded (a re-configured renderer need not read
    the file again). An unreadable model is a ``ConfigError`` naming the key and the file."""
    if config.flame_model is None:
        return FaceRenderer(config)
    if flame is None:
        try:
            flame = FlameModel.load(config.flame_model)
        except FlameModelError as err:
            raise ConfigError(f"display.flame_model: {err}") from None
    return MeshRenderer(flame, config)


# ------------------------------------------------------------------------------------------

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_U = np.linspace(-1.0, 1.0, 25)
_ARC = np.sqrt(np.clip(1.0 - _U * _U, 0.0, 1.0))
_EYE_LIMIT = 0.6  # rad, clip of eye rotations used for drawing
_NECK_LIMIT = 0.5


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.rint(points * _ONE).astype(np.int32)


class FaceRenderer:
    """Stylised face renderer; see the module docstring."""

    def __init__(self, config: FaceDisplayConfig | None = None, basis: ControlBasis | None = None):
        import cv2

        self._cv2 = cv2
        self.config = config if config is not None else FaceDisplayConfig()
        self.basis = basis if basis is not None else default_basis()
        c = self.config
        self.width, self.height = int(c.width), int(c.height)
        self.size = float(min(self.width, self.height))
        self._line = cv2.LINE_AA if c.anti_aliasing else cv2.LINE_8
        self._bg = np.asarray(c.colors.background, np.uint8)

    # -------------------------------------------------------------------------- public API
    def render(self, frame: FlameFrame) -> np.ndarray:
        """A new ``[height, width, 3]`` uint8 RGB image of ``frame``."""
        out = np.empty((self.height, self.width, 3), np.uint8)
        return self.render_into(frame, out)

    def render_into(self, frame: FlameFrame, out: np.ndarray) -> np.ndarray:
        """Draws ``frame`` into ``out`` (uint8 ``[height, width, 3]``, C-contiguous); returns it."""
        if (
            not isinstance(out, np.ndarray) or out.shape != (self.height, self.width, 3)
            or out.dtype != np.uint8 or not out.flags.c_contiguous
        ):
            raise ValueError(
                f"output buffer must be a C-contiguous uint8 array [{self.height}, {self.width}, 3]"
            )
        p = self._params(frame)
        self._draw(p, out)
        return out

    # ------------------------------------------------------------------------ parameters
    def _params(self, frame: FlameFrame) -> dict:
        if not frame.is_finite():
            frame = FlameFrame.neutral()
        ctrl = flame_to_controls(frame, self.basis)
        jaw = float(np.clip(frame.jaw_pose[0] / self.basis.jaw_max_rad, 0.0, 1.0))
        eyes = np.clip(frame.eye_pose.astype(np.float64), -_EYE_LIMIT, _EYE_LIMIT).reshape(2, 3)
        lids = np.clip(frame.eyelids.astype(np.float64), 0.0, 1.0)
        neck = np.clip(frame.neck_pose.astype(np.float64), -_NECK_LIMIT, _NECK_LIMIT)
        return {"c": {n: float(ctrl[i]) for n, i in CONTROL_INDEX.items()}, "jaw": jaw,
                "eyes": eyes, "lids": lids, "neck": neck}

    # ---------------------------------------------------------------------------- drawing
    def _draw(self, p: dict, out: np.ndarray) -> None:
        cv2 = self._cv2
        c, g, col = p["c"], self.config.geometry, self.config.colors
        s = self.size
        cx, cy = self.width / 2.0, self.height / 2.0
        pitch, yaw, roll = p["neck"]
        dx, dy = g.head_shift * yaw * s, g.head_shift * pitch * s
        phi = g.head_roll_gain * roll
        cos_r, sin_r = math.cos(phi), math.sin(phi)
        # roll is a counter-clockwise turn as the viewer sees it (image y points down)
        rot = np.array([[cos_r, sin_r], [-sin_r, cos_r]])
        centre = np.array([cx + dx, cy + dy])

        def place(local: np.ndarray) -> np.ndarray:
            """Face-local offsets (pixels, y down) -> image points, head motion applied."""
            return local @ rot.T + centre

        out[:] = self._bg
        line = self._line
        if g.face_width > 0 and g.face_height > 0:
            fc = (int(round((cx + dx / 2) * _ONE)), int(round((cy + dy / 2) * _ONE)))
            axes = (int(round(g.face_width * s / 2 * _ONE)), int(round(g.face_height * s / 2 * _ONE)))
            cv2.ellipse(out, fc, axes, -math.degrees(phi) / 2, 0, 360, col.skin, -1, line, _SHIFT)

        brow_open = 1.0 + 0.12 * c["brow_raise"] - 0.1 * c["brow_furrow"]
        for side, eye_index in ((-1, 1), (1, 0)):  # viewer's left = robot's right eye
            self._eye(out, place, side, p["eyes"][eye_index], p["lids"][eye_index], brow_open, c["smile"])
            self._brow(out, place, side, c)
        self._mouth(out, place, c, p["jaw"])

    def _eye(self, out, place, side, pose, lid, brow_open, smile) -> None:
        cv2, g, col, s, line = self._cv2, self.config.geometry, self.config.colors, self.size, self._line
        ex, ey = side * g.eye_spacing * s / 2, g.eye_y * s
        ew, eh = g.eye_width * s / 2, g.eye_height * s / 2 * brow_open
        close = g.lid_rest + (1.0 - g.lid_rest) * lid
        x = ex + _U * ew
        top, bottom = -eh * _ARC, eh * _ARC
        shut = 0.3 * eh * _ARC  # the closed eye: a gentle downward arc
        upper = top + (shut - top) * close
        lower = bottom + (shut - bottom) * min(1.0, lid + 0.25 * smile * (1.0 - lid))
        lower = np.maximum(lower, upper)
        upper_pts = place(np.stack([x, ey + upper], axis=1))
        opening = np.concatenate([upper_pts, place(np.stack([x[::-1], ey + lower[::-1]], axis=1))])

        pad = 3
        x0 = max(int(math.floor(opening[:, 0].min())) - pad, 0)
        y0 = max(int(math.floor(opening[:, 1].min())) - pad, 0)
        x1 = min(int(math.ceil(opening[:, 0].max())) + pad, self.width)
        y1 = min(int(math.ceil(opening[:, 1].max())) + pad, self.height)
        if x1 > x0 and y1 > y0 and float(np.max(lower - upper)) > 0.05:
            origin = np.array([x0, y0], np.float64)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [_fixed(opening - origin)], 255, line, _SHIFT)
            if mask.any():
                roi = out[y0:y1, x0:x1]
                eye = np.empty_like(roi)
                eye[:] = col.eye
                gain = self.config.gaze_gain
                off = np.array([gain * pose[1] * ew, gain * pose[0] * eh])
                iris_r = g.iris_size * s / 2
                lim = np.array([max(ew - 0.5 * iris_r, 0.0), max(eh, 0.0)])
                off = np.clip(off, -lim, lim)
                ic = place(np.array([[ex + off[0], ey + off[1]]]))[0] - origin
                icf = tuple(int(v) for v in _fixed(ic))
                cv2.circle(eye, icf, int(round(iris_r * _ONE)), col.iris, -1, line, _SHIFT)
                cv2.circle(eye, icf, int(round(g.pupil_size * s / 2 * _ONE)), col.pupil, -1, line, _SHIFT)
                if g.highlight_size > 0:
                    hc = ic + np.array([0.35, -0.35]) * iris_r
                    cv2.circle(eye, tuple(int(v) for v in _fixed(hc)), int(round(g.highlight_size * s / 2 * _ONE)),
                               col.highlight, -1, line, _SHIFT)
                if line == cv2.LINE_AA:
                    a = mask[:, :, None].astype(np.uint16)
                    roi[:] = ((eye * a + roi * (255 - a) + 127) // 255).astype(np.uint8)
                else:
                    m = mask > 0
                    roi[m] = eye[m]
        thick = max(1, int(round(g.lid_thickness * s)))
        cv2.polylines(out, [_fixed(upper_pts)], False, col.lid, thick, line, _SHIFT)

    def _brow(self, out, place, side, c) -> None:
        cv2, g, s = self._cv2, self.config.geometry, self.size
        bx, by = side * g.eye_spacing * s / 2, g.brow_y * s
        half = g.brow_length * s / 2
        inner = (1.0 - side * _U) / 2.0  # 1 at the end nearest the face's centre line
        x = bx + _U * half - side * c["brow_furrow"] * 0.15 * half * inner
        y = (by - g.brow_arch * s * _ARC - g.brow_raise * s * c["brow_raise"]
             + g.brow_furrow * s * c["brow_furrow"] * inner)
        thick = max(1, int(round(g.brow_thickness * s)))
        cv2.polylines(out, [_fixed(place(np.stack([x, y], axis=1)))], False,
                      self.config.colors.brow, thick, self._line, _SHIFT)

    def _mouth(self, out, place, c, jaw) -> None:
        cv2, g, col, s, line = self._cv2, self.config.geometry, self.config.colors, self.size, self._line
        press, tuck, rnd, fun = c["lip_press"], c["lip_tuck"], c["lip_round"], c["lip_funnel"]
        smile, stretch = c["smile"], c["lip_stretch"]
        opening = (jaw * (1.0 - 0.4 * tuck) + 0.2 * rnd + 0.1 * fun) * (1.0 - press)
        width = g.mouth_width * s * (1.0 + 0.3 * smile + 0.3 * stretch - 0.38 * rnd - 0.25 * fun
                                     + 0.08 * press - 0.12 * jaw)
        width = max(width, 0.3 * g.mouth_width * s)
        roundness = min(1.0, rnd + 0.7 * fun)
        bump = _ARC ** (2.0 * (1.0 - 0.5 * roundness))  # lens (1 - u^2) .. ellipse sqrt(1 - u^2)
        lift = g.smile_curve * s * (smile + 0.2 * stretch)
        yc = g.mouth_y * s - lift * _U * _U
        h = opening * g.mouth_open_height * s
        up_in = yc - 0.3 * h * bump
        lo_in = yc + 0.7 * h * bump
        t = g.lip_thickness * s * (1.0 - 0.5 * press - 0.3 * stretch - 0.1 * smile + 0.4 * rnd + 0.3 * fun)
        t = max(t, 0.15 * g.lip_thickness * s)
        up_out = up_in - t * _ARC
        lo_out = lo_in + 1.2 * t * (1.0 + 0.4 * tuck) * _ARC
        x = _U * width / 2

        def curve(y, reverse=False):
            pts = np.stack([x, y], axis=1)
            return place(pts[::-1] if reverse else pts)

        cv2.fillPoly(out, [_fixed(np.concatenate([curve(up_out), curve(lo_out, True)]))], col.lip, line, _SHIFT)
        if h > 0.05:
            cv2.fillPoly(out, [_fixed(np.concatenate([curve(up_in), curve(lo_in, True)]))], col.mouth, line, _SHIFT)
        teeth_h = min(g.teeth_height * s * min(1.0, 3.0 * jaw), 0.3 * h)  # teeth show as the jaw drops
        teeth = np.minimum(up_in + teeth_h * bump, lo_in)
        if teeth_h > 0.5:
            cv2.fillPoly(out, [_fixed(np.concatenate([curve(up_in), curve(teeth, True)]))], col.teeth, line, _SHIFT)
        # the dark line between the lips, drawn last so that the interior never shrinks as it opens
        seam = max(1, int(round(0.006 * s)))
        cv2.polylines(out, [_fixed(curve((up_in + lo_in) / 2))], False, col.mouth, seam, line, _SHIFT)
