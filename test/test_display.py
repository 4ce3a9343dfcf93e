"""The stylised face display: image contract, config, and that each FLAME input moves the
feature it should, measured on the pixels; and the FLAME mesh view chosen by ``flame_model``."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from facebot.config import ConfigError
from facebot.face.controls import controls_to_frame
from facebot.face.flame import FlameFrame
from facebot.face.flame_mesh import FlameModel
from facebot.robot.display import (
    DisplayColors,
    DisplayGeometry,
    FaceDisplayConfig,
    FaceRenderer,
    face_renderer,
    load_display_config,
)
from facebot.robot.mesh_renderer import MeshRenderer

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_flame import synthetic_flame  # noqa: E402

CFG = FaceDisplayConfig()
COL = CFG.colors


@pytest.fixture(scope="module")
def renderer():
    return FaceRenderer(CFG)


def _mask(img, colour, tol=0):
    if tol == 0:
        return np.all(img == colour, axis=2)
    return np.abs(img.astype(int) - colour).max(axis=2) <= tol


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    assert xs.size > 0
    return xs.mean(), ys.mean()


def _frame(controls=None, **fields):
    f = controls_to_frame(controls or {})
    for name, value in fields.items():
        setattr(f, name, np.asarray(value, np.float32))
    return f


def test_shipped_config_matches_defaults_and_renders(renderer):
    assert load_display_config() == FaceDisplayConfig()
    img = renderer.render(FlameFrame.neutral())
    assert img.shape == (480, 480, 3) and img.dtype == np.uint8
    for colour in (COL.background, COL.skin, COL.eye, COL.iris, COL.pupil, COL.lip, COL.brow):
        assert _mask(img, colour).sum() > 20, colour


def test_config_sizes_honoured_and_buffer_reused():
    cfg = FaceDisplayConfig(width=320, height=200)
    r = FaceRenderer(cfg)
    img = r.render(FlameFrame.neutral())
    assert img.shape == (200, 320, 3)
    out = np.zeros((200, 320, 3), np.uint8)
    assert r.render_into(FlameFrame.neutral(), out) is out
    np.testing.assert_array_equal(out, img)
    for bad in (np.zeros((480, 480, 3), np.uint8), np.zeros((200, 320, 3), np.float32),
                np.zeros((320, 200, 3), np.uint8).transpose(1, 0, 2)):
        with pytest.raises(ValueError):
            r.render_into(FlameFrame.neutral(), bad)
    # the geometry scales with the picture: the eyes are as wide relative to its smaller side
    small = FaceRenderer(FaceDisplayConfig(width=240, height=240)).render(FlameFrame.neutral())
    big = FaceRenderer(CFG).render(FlameFrame.neutral())
    ratio = _mask(big, COL.iris).sum() / _mask(small, COL.iris).sum()
    assert 3.0 < ratio < 5.0


def test_eyelids_close_the_eyes(renderer):
    open_img = renderer.render(FlameFrame.neutral())
    closed = renderer.render(_frame(eyelids=[1, 1]))
    one = renderer.render(_frame(eyelids=[1, 0]))
    half = renderer.render(_frame(eyelids=[0.5, 0.5]))
    white = [_mask(im, COL.eye).sum() for im in (open_img, half, one, closed)]
    assert white[0] > 1500
    assert white[3] == 0 and _mask(closed, COL.iris).sum() == 0 and _mask(closed, COL.pupil).sum() == 0
    assert 0 < white[1] < white[0]
    assert white[2] == pytest.approx(white[0] / 2, rel=0.1)
    # eyelids[0] is the robot's left eye, drawn on the viewer's right
    xs = np.nonzero(_mask(one, COL.eye))[1]
    assert xs.max() < CFG.width / 2


def test_gaze_moves_the_iris(renderer):
    x0, y0 = _centroid(_mask(renderer.render(FlameFrame.neutral()), COL.iris))
    xr, yr = _centroid(_mask(renderer.render(_frame(eye_pose=[0, 0.3, 0, 0, 0.3, 0])), COL.iris))
    xl, _ = _centroid(_mask(renderer.render(_frame(eye_pose=[0, -0.3, 0, 0, -0.3, 0])), COL.iris))
    xd, yd = _centroid(_mask(renderer.render(_frame(eye_pose=[0.2, 0, 0, 0.2, 0, 0])), COL.iris))
    xu, yu = _centroid(_mask(renderer.render(_frame(eye_pose=[-0.2, 0, 0, -0.2, 0, 0])), COL.iris))
    assert xr > x0 + 5 and xl < x0 - 5 and abs(yr - y0) < 4  # + yaw: towards the viewer's right
    assert yd > y0 + 3 and yu < y0 - 3 and abs(xd - x0) < 2  # + pitch: down


def test_jaw_opening_grows_the_mouth_interior(renderer):
    areas = []
    for jaw in np.linspace(0.0, 0.35, 8):
        areas.append(int(_mask(renderer.render(_frame(jaw_pose=[jaw, 0, 0])), COL.mouth).sum()))
    assert all(b >= a for a, b in zip(areas, areas[1:])), areas
    assert areas[-1] > 5 * max(areas[0], 1) and areas[-1] > 2000
    # lip_press closes even an open jaw
    pressed = renderer.render(_frame({"jaw_open": 1.0, "lip_press": 1.0}))
    assert _mask(pressed, COL.mouth).sum() < areas[1]


def _corner_row(img):
    ys, xs = np.nonzero(_mask(img, COL.lip))
    edge = (xs <= xs.min() + 8) | (xs >= xs.max() - 8)
    return ys[edge].mean(), xs.max() - xs.min()


def test_smile_raises_and_widens_the_corners_round_narrows(renderer):
    row0, width0 = _corner_row(renderer.render(FlameFrame.neutral()))
    row_s, width_s = _corner_row(renderer.render(controls_to_frame({"smile": 1.0})))
    _, width_r = _corner_row(renderer.render(controls_to_frame({"lip_round": 1.0})))
    assert row_s < row0 - 10
    assert width_s > width0 * 1.15
    assert width_r < width0 * 0.8


def test_brows_raise_and_furrow(renderer):
    def brow(img):
        return _centroid(_mask(img, COL.brow))

    _, y0 = brow(renderer.render(FlameFrame.neutral()))
    _, y_up = brow(renderer.render(controls_to_frame({"brow_raise": 1.0})))
    _, y_down = brow(renderer.render(controls_to_frame({"brow_furrow": 1.0})))
    assert y_up < y0 - 10
    assert y_down > y0 + 3


def test_neck_moves_the_features(renderer):
    def mouth_x(img):
        return _centroid(_mask(img, COL.lip))

    x0, y0 = mouth_x(renderer.render(FlameFrame.neutral()))
    x1, _ = mouth_x(renderer.render(_frame(neck_pose=[0, 0.2, 0])))
    _, y2 = mouth_x(renderer.render(_frame(neck_pose=[0.2, 0, 0])))
    x3, _ = mouth_x(renderer.render(_frame(neck_pose=[0, 0, 0.2])))
    assert x1 > x0 + 10  # yaw: towards the viewer's right, like the gaze
    assert y2 > y0 + 10  # pitch: chin down
    assert x3 > x0 + 10  # roll counter-clockwise (viewer's view) swings the mouth right


@pytest.mark.parametrize("field,index", [("expression", 0), ("jaw_pose", 0), ("neck_pose", 1),
                                         ("eye_pose", 4), ("eyelids", 1)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_frames_render_neutral(renderer, field, index, bad):
    neutral = renderer.render(FlameFrame.neutral())
    f = controls_to_frame({"jaw_open": 0.8, "smile": 0.5})
    f.eye_pose[:] = 0.2
    getattr(f, field)[index] = bad
    np.testing.assert_array_equal(renderer.render(f), neutral)


def test_extreme_values_and_other_expression_sizes_render(renderer):
    wild = FlameFrame(expression=np.full(100, 1e6), jaw_pose=[1e6, -1e6, 5], neck_pose=[-1e6, 1e6, 1e6],
                      eye_pose=np.full(6, -1e6), eyelids=[1e6, -1e6])
    img = renderer.render(wild)
    assert img.shape == (480, 480, 3)
    renderer.render(FlameFrame(expression=np.ones(16) * 0.5))


def test_deterministic(renderer):
    f = _frame({"jaw_open": 0.5, "smile": 0.3, "brow_raise": 0.4}, eye_pose=[0.1, -0.2, 0, 0.1, -0.2, 0],
               neck_pose=[0.05, 0.1, -0.05], eyelids=[0.3, 0.2])
    a = renderer.render(f)
    np.testing.assert_array_equal(a, renderer.render(f))
    np.testing.assert_array_equal(a, FaceRenderer(FaceDisplayConfig()).render(f))


def test_aliased_mode_uses_only_palette_colours():
    cfg = FaceDisplayConfig(anti_aliasing=False)
    img = FaceRenderer(cfg).render(_frame({"jaw_open": 0.6, "smile": 0.4}, eye_pose=[0.1, 0.2, 0, 0.1, 0.2, 0]))
    palette = {tuple(getattr(cfg.colors, f.name)) for f in dataclasses.fields(cfg.colors)}
    assert {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)} <= palette


def test_no_face_shape_when_disabled():
    cfg = FaceDisplayConfig(geometry=DisplayGeometry(face_width=0))
    img = FaceRenderer(cfg).render(FlameFrame.neutral())
    assert _mask(img, cfg.colors.skin).sum() == 0


def _write(tmp_path, text):
    p = tmp_path / "face_display.yaml"
    p.write_text(text)
    return p


def test_config_typos_and_bad_values_rejected(tmp_path):
    with pytest.raises(ConfigError, match="eye_spacng"):
        load_display_config(_write(tmp_path, "display:\n  geometry:\n    eye_spacng: 0.3\n"))
    with pytest.raises(ConfigError, match="widht"):
        load_display_config(_write(tmp_path, "display:\n  widht: 320\n"))
    with pytest.raises(ConfigError, match="unknown section"):
        load_display_config(_write(tmp_path, "dispaly:\n  width: 320\n"))
    with pytest.raises(ConfigError, match="skin"):
        load_display_config(_write(tmp_path, "display:\n  colors:\n    skin: [300, 0, 0]\n"))
    with pytest.raises(ConfigError, match="width"):
        load_display_config(_write(tmp_path, "display:\n  width: 4.5\n"))
    with pytest.raises(ConfigError, match="anti_aliasing"):
        load_display_config(_write(tmp_path, "display:\n  anti_aliasing: 'yes'\n"))
    cfg = load_display_config(_write(tmp_path, "display:\n  width: 320\n  colors:\n    iris: [1, 2, 3]\n"))
    assert cfg.width == 320 and cfg.colors.iris == (1, 2, 3) and cfg.height == 480
    assert isinstance(cfg.colors, DisplayColors)


# ------------------------------------------------------------- the FLAME mesh, when configured


def test_flame_model_in_the_config_selects_the_mesh_view(tmp_path):
    """``flame_model`` (relative to the YAML's folder) makes ``face_renderer`` draw that FLAME
    mesh, exactly as ``MeshRenderer`` does; without it the stylised face is drawn."""
    (tmp_path / "models").mkdir()
    np.savez(tmp_path / "models" / "flame.npz", **synthetic_flame(n_lat=12, n_lon=16, eye_res=6))
    cfg = load_display_config(_write(tmp_path, "display:\n  width: 160\n  height: 120\n"
                                               "  flame_model: models/flame.npz\n"))
    assert cfg.flame_model == str(tmp_path / "models" / "flame.npz")
    mesh = face_renderer(cfg)
    assert isinstance(mesh, MeshRenderer)
    frame = FlameFrame(jaw_pose=[0.2, 0, 0], eye_pose=[0, 0.3, 0, 0, 0.3, 0])
    direct = MeshRenderer(FlameModel.load(cfg.flame_model), cfg).render(frame)
    np.testing.assert_array_equal(mesh.render(frame), direct)
    assert face_renderer(cfg, mesh.model).model is mesh.model  # a loaded model is reused
    stylised = face_renderer(dataclasses.replace(cfg, flame_model=None))
    assert isinstance(stylised, FaceRenderer)
    assert not np.array_equal(stylised.render(frame), direct)


def test_a_bad_flame_model_setting_is_a_config_error(tmp_path):
    missing = load_display_config(_write(tmp_path, "display:\n  flame_model: nowhere.npz\n"))
    with pytest.raises(ConfigError, match=r"display\.flame_model: .*nowhere\.npz: no such file"):
        face_renderer(missing)
    (tmp_path / "model.pkl").write_bytes(b"\x80\x02}q\x00.")
    pickled = load_display_config(_write(tmp_path, "display:\n  flame_model: model.pkl\n"))
    with pytest.raises(ConfigError, match="flame-convert"):
        face_renderer(pickled)
    with pytest.raises(ConfigError, match="flame_model"):
        load_display_config(_write(tmp_path, "display:\n  flame_model: 3\n"))
    with pytest.raises(ConfigError, match="flame_model"):
        load_display_config(_write(tmp_path, "display:\n  flame_model: ''\n"))
