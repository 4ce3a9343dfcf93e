"""FLAME mesh path: restricted conversion of the pickle, npz loading, LBS, mesh rendering, CLI.

Everything runs on a small synthetic model in FLAME's layout that the tests build and pickle
the way the official file is pickled (protocol 2, chumpy arrays rebuilt through
``copy_reg._reconstructor``, a scipy.sparse ``J_regressor``); the real model is not needed.
"""
from __future__ import annotations

import copyreg
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.transform import Rotation

from facebot.cli import main
from facebot.face.flame import FlameFrame
from facebot.face.flame_convert import convert_flame_pickle, read_flame_pickle
from facebot.face.flame_mesh import FLAME_KEYS, FlameModel, FlameModelError, rodrigues
from facebot.robot.display import FaceDisplayConfig
from facebot.robot.mesh_renderer import MeshRenderer

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_flame import synthetic_flame  # noqa: E402


@pytest.fixture
def fake_chumpy(monkeypatch):
    """A stand-in ``chumpy.ch.Ch`` that pickles like chumpy does (state dict with ``x``)."""
    pkg = types.ModuleType("chumpy")
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, np.float64)

        def __reduce__(self):
            state = {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                     "_make_dense": False, "_make_sparse": False}
            return (copyreg._reconstructor, (Ch, object, None), state)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = Ch.__name__ = "Ch"
    mod.Ch = Ch
    pkg.ch = mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch


def _small(**kw):
    return synthetic_flame(n_lat=16, n_lon=20, eye_res=6, **kw)


def _write_flame_pickle(path, arrays, Ch):
    obj = {
        "v_template": Ch(arrays["v_template"]),
        "shapedirs": Ch(arrays["shapedirs"]),
        "posedirs": np.asarray(arrays["posedirs"]),
        "J_regressor": sp.csc_matrix(arrays["J_regressor"]),
        "kintree_table": arrays["kintree_table"],
        "weights": np.asarray(arrays["weights"]),
        "f": arrays["f"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def arrays():
    return _small()


@pytest.fixture
def flame_pkl(tmp_path, arrays, fake_chumpy):
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, arrays, fake_chumpy)
    return path


@pytest.fixture
def model_npz(tmp_path, flame_pkl):
    out = tmp_path / "flame.npz"
    convert_flame_pickle(flame_pkl, out, i_trust_this_file=True)
    return out


# ------------------------------------------------------------------------------ conversion


def test_synthetic_model_has_flames_layout(arrays):
    nv = arrays["v_template"].shape[0]
    assert 300 <= nv <= 1000
    assert arrays["shapedirs"].shape == (nv, 3, 400)
    assert arrays["posedirs"].shape == (nv, 3, 36)
    assert arrays["J_regressor"].shape == (5, nv)
    assert arrays["kintree_table"].shape == (2, 5)
    assert arrays["weights"].shape == (nv, 5)
    np.testing.assert_allclose(arrays["weights"].sum(axis=1), 1.0)


def test_convert_roundtrip_is_exact_and_pickle_free(tmp_path, flame_pkl, arrays):
    out = tmp_path / "m.npz"
    info = convert_flame_pickle(flame_pkl, out, i_trust_this_file=True)
    assert info["shape_components"] == 300 and info["expression_components"] == 100
    with np.load(out, allow_pickle=False) as data:  # no object arrays anywhere
        for key in FLAME_KEYS:
            assert data[key].dtype != object
        np.testing.assert_allclose(data["v_template"], arrays["v_template"], atol=1e-7)
        np.testing.assert_allclose(data["shapedirs"], arrays["shapedirs"], atol=1e-7)
        np.testing.assert_allclose(data["J_regressor"], arrays["J_regressor"], atol=1e-7)
        np.testing.assert_array_equal(data["f"], arrays["f"])
        assert int(data["kintree_table"][0, 1]) == 0
    model = FlameModel.load(out)
    assert model.n_vertices == arrays["v_template"].shape[0]
    assert model.n_faces == arrays["f"].shape[0]
    assert model.n_expression == 100
    with pytest.raises(FlameModelError, match="already exists"):
        convert_flame_pickle(flame_pkl, out, i_trust_this_file=True)


def test_converter_needs_the_explicit_flag(tmp_path, flame_pkl):
    out = tmp_path / "m.npz"
    with pytest.raises(FlameModelError, match="--i-trust-this-file"):
        convert_flame_pickle(flame_pkl, out)
    assert not out.exists()


def test_malicious_pickle_is_refused_without_running(tmp_path, arrays):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    payload = {k: np.asarray(arrays[k]) for k in FLAME_KEYS}
    payload["weights"] = _Evil(marker)
    evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(FlameModelError) as err:
        read_flame_pickle(evil, i_trust_this_file=True)
    msg = str(err.value)
    assert "\n" not in msg and "system" in msg and "refused" in msg
    assert not marker.exists()
    # other ways in: builtins.eval, a numpy function that is not array reconstruction
    for fn, args in ((eval, ("1+1",)), (np.load, ("x.npy",))):
        class Sneaky:
            def __reduce__(self, fn=fn, args=args):
                return (fn, args)
        p = tmp_path / "sneaky.pkl"
        p.write_bytes(pickle.dumps({"v_template": Sneaky()}, protocol=4))
        with pytest.raises(FlameModelError, match="refused"):
            read_flame_pickle(p, i_trust_this_file=True)


def test_garbage_and_incomplete_pickles_give_one_line_errors(tmp_path, arrays):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(FlameModelError) as err:
        read_flame_pickle(p, i_trust_this_file=True)
    assert "\n" not in str(err.value)
    p.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2))
    with pytest.raises(FlameModelError, match="missing"):
        read_flame_pickle(p, i_trust_this_file=True)


def test_load_refuses_pickles_and_bad_layouts(tmp_path, flame_pkl, arrays):
    with pytest.raises(FlameModelError, match="flame-convert"):
        FlameModel.load(flame_pkl)
    disguised = tmp_path / "model.npz"
    disguised.write_bytes(flame_pkl.read_bytes())
    with pytest.raises(FlameModelError, match="flame-convert"):
        FlameModel.load(disguised)
    bad = dict(arrays)
    bad["posedirs"] = bad["posedirs"][:, :, :30]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(FlameModelError, match="posedirs"):
        FlameModel.load(tmp_path / "bad.npz")
    bad = dict(arrays)
    bad["f"] = bad["f"].astype(np.int64) + 10_000
    np.savez(tmp_path / "bad2.npz", **bad)
    with pytest.raises(FlameModelError, match="out of range"):
        FlameModel.load(tmp_path / "bad2.npz")


# ----------------------------------------------------------------------------- geometry


def test_rodrigues_matches_scipy_and_is_exact_at_zero():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 1, (20, 3))
    r[0] = 0.0
    r[1] = [1e-7, 0, 0]
    np.testing.assert_allclose(rodrigues(r), Rotation.from_rotvec(r).as_matrix(), atol=1e-12)
    np.testing.assert_array_equal(rodrigues(np.zeros(3)), np.eye(3))
    # + pitch (about x) moves a point in front of and below the joint further down
    chin = rodrigues([0.3, 0, 0]) @ np.array([0.0, -1.0, 1.0])
    assert chin[1] < -1.0


def test_zero_pose_is_template_plus_blendshapes(arrays):
    model = FlameModel(arrays)
    rng = np.random.default_rng(2)
    exp = rng.normal(0, 1, 50)
    betas = rng.normal(0, 1, 10)
    v = model.vertices(FlameFrame(expression=exp), betas=betas)
    sd = arrays["shapedirs"]
    expected = arrays["v_template"] + sd[:, :, 300:350] @ exp + sd[:, :, :10] @ betas
    np.testing.assert_allclose(v, expected, atol=1e-6)
    np.testing.assert_allclose(model.vertices(FlameFrame.neutral()), arrays["v_template"], atol=1e-7)


def test_jaw_rotation_moves_only_jaw_weighted_vertices_rigidly():
    arrays = _small(posedirs_scale=0.0)
    model = FlameModel(arrays)
    theta = 0.3
    v, joints = model.vertices(FlameFrame(jaw_pose=[theta, 0, 0]), return_joints=True)
    v0 = arrays["v_template"]
    w = arrays["weights"]
    jaw = np.asarray(joints[2])
    rot = Rotation.from_rotvec([theta, 0, 0]).as_matrix()
    rigid = (v0 - jaw) @ rot.T + jaw
    only_jaw = w[:, 2] == 1.0
    no_jaw = w[:, 2] == 0.0
    assert only_jaw.sum() > 5 and no_jaw.sum() > 5
    np.testing.assert_allclose(v[only_jaw], rigid[only_jaw], atol=1e-6)
    np.testing.assert_allclose(v[no_jaw], v0[no_jaw], atol=1e-7)
    mixed = ~only_jaw & ~no_jaw
    blend = w[mixed, 2:3] * rigid[mixed] + (1 - w[mixed, 2:3]) * v0[mixed]
    np.testing.assert_allclose(v[mixed], blend, atol=1e-6)
    # + jaw pitch opens the mouth: jaw vertices in front of the joint go down
    front = only_jaw & (v0[:, 2] > jaw[2] + 0.02)
    assert np.all(v[front, 1] < v0[front, 1])


def test_neck_rotates_everything_and_pose_correctives_add_linearly(arrays):
    model = FlameModel(arrays)
    # eyes: only eye vertices are skinned to them, so every other vertex moves by exactly
    # the pose corrective posedirs @ (R - I) features
    eye = np.array([0.1, -0.2, 0.0, 0.0, 0.25, 0.0])
    v = model.vertices(FlameFrame(eye_pose=eye))
    rots = rodrigues(np.concatenate([np.zeros(9), eye]).reshape(5, 3))
    feat = (rots[1:] - np.eye(3)).reshape(-1)
    corr = arrays["posedirs"] @ feat
    head = arrays["weights"][:, 3:].sum(axis=1) == 0
    np.testing.assert_allclose(v[head], arrays["v_template"][head] + corr[head], atol=1e-7)
    # the neck is the parent of jaw and eyes: with no correctives the head turns rigidly
    rigid_model = FlameModel(_small(posedirs_scale=0.0))
    v0 = rigid_model.v_template
    vn, joints = rigid_model.vertices(FlameFrame(neck_pose=[0, 0.4, 0]), return_joints=True)
    rot = Rotation.from_rotvec([0, 0.4, 0]).as_matrix()
    np.testing.assert_allclose(vn, (v0 - joints[1]) @ rot.T + joints[1], atol=1e-6)


# ----------------------------------------------------------------------------- rendering


def _iris_centroid(img, colour):
    ys, xs = np.nonzero(np.all(img == colour, axis=2))
    return xs.mean(), ys.mean(), xs.size


def test_mesh_renderer_output_and_bad_frames(model_npz):
    cfg = FaceDisplayConfig(width=200, height=160)
    renderer = MeshRenderer(FlameModel.load(model_npz), cfg)
    neutral = renderer.render(FlameFrame.neutral())
    assert neutral.shape == (160, 200, 3) and neutral.dtype == np.uint8
    head = np.any(neutral != cfg.colors.background, axis=2)
    assert head.mean() > 0.2  # the head covers a good part of the picture
    np.testing.assert_array_equal(renderer.render(FlameFrame.neutral()), neutral)
    bad = FlameFrame.neutral()
    bad.jaw_pose[0] = np.nan
    np.testing.assert_array_equal(renderer.render(bad), neutral)
    out = np.zeros((160, 200, 3), np.uint8)
    assert renderer.render_into(FlameFrame.neutral(), out) is out
    np.testing.assert_array_equal(out, neutral)
    with pytest.raises(ValueError):
        renderer.render_into(FlameFrame.neutral(), np.zeros((10, 10, 3), np.uint8))
    # the jaw moves the picture
    assert np.any(renderer.render(FlameFrame(jaw_pose=[0.3, 0, 0])) != neutral)


def test_mesh_renderer_iris_follows_gaze():
    from facebot.robot.display import MeshDisplayConfig

    cfg = FaceDisplayConfig(width=320, height=320, mesh=MeshDisplayConfig(ambient=1.0))  # unshaded: exact colours
    renderer = MeshRenderer(FlameModel(synthetic_flame(n_lat=16, n_lon=20, eye_res=12)), cfg)
    x0, y0, n0 = _iris_centroid(renderer.render(FlameFrame.neutral()), cfg.colors.iris)
    xr, yr, nr = _iris_centroid(renderer.render(FlameFrame(eye_pose=[0, 0.4, 0, 0, 0.4, 0])), cfg.colors.iris)
    xd, yd, nd = _iris_centroid(renderer.render(FlameFrame(eye_pose=[0.4, 0, 0, 0.4, 0, 0])), cfg.colors.iris)
    assert min(n0, nr, nd) > 20
    assert xr > x0 + 2.0  # + yaw looks towards the viewer's right
    assert yd > y0 + 2.0  # + pitch looks down


# ---------------------------------------------------------------------------------- CLI


def test_cli_flame_convert(tmp_path, flame_pkl, arrays, capsys):
    out = tmp_path / "cli.npz"
    assert main(["flame-convert", str(flame_pkl), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--i-trust-this-file" in err
    assert not out.exists()

    assert main(["flame-convert", str(flame_pkl), str(out), "--i-trust-this-file"]) == 0
    assert "vertices" in capsys.readouterr().out
    FlameModel.load(out)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _Evil(marker)}, protocol=2))
    assert main(["flame-convert", str(evil), str(tmp_path / "e.npz"), "--i-trust-this-file"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not marker.exists() and not (tmp_path / "e.npz").exists()
