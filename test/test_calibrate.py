"""`facebot calibrate`: bounded least-squares fit of the FLAME -> joint map from paired samples."""
from __future__ import annotations

import numpy as np
import pytest

from facebot.cli import main
from facebot.config import CONFIG_DIR
from facebot.robot.head_config import load_head_config
from facebot.robot.calibrate import CalibrationError, calibrate, load_samples, reference_samples

REFERENCE = CONFIG_DIR / "head_reference.yaml"


def _pairs(n=600, seed=0, noise=0.002):
    """Independent random FLAME fields and joints driven by a known map."""
    rng = np.random.default_rng(seed)
    exp = rng.normal(0, 1, (n, 50)).astype(np.float32)
    neck = rng.uniform(-0.4, 0.4, (n, 3)).astype(np.float32)
    jaw = rng.uniform(0, 0.35, (n, 3)).astype(np.float32)
    brow = 0.05 + 0.08 * exp[:, 12] - 0.04 * exp[:, 13]
    corner = 0.10 * exp[:, 1] + 0.06 * exp[:, 10] - 0.02
    pitch = 0.9 * neck[:, 0] + 0.3 * jaw[:, 0]
    pos = np.stack([brow, corner, pitch], 1) + rng.normal(0, noise, (n, 3))
    return {"expression": exp, "jaw_pose": jaw, "neck_pose": neck,
            "eye_pose": np.zeros((n, 6), np.float32), "eyelids": np.zeros((n, 2), np.float32),
            "joint_names": np.array(["brow_left", "lip_corner_left", "neck_pitch"]), "joint_positions": pos}


def _terms(joint):
    return {(t.field, t.index): t.weight for t in joint.expression}


def test_fit_recovers_known_weights_and_offsets(tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, **_pairs())
    cfg = load_head_config(REFERENCE)
    new, fits = calibrate(cfg, load_samples(path), fields=None)
    j = {x.name: x for x in new.joints}
    brow = _terms(j["brow_left"])
    assert brow[("expression", 12)] == pytest.approx(0.08, abs=2e-3)
    assert brow[("expression", 13)] == pytest.approx(-0.04, abs=2e-3)
    assert j["brow_left"].offset == pytest.approx(0.05, abs=2e-3)
    others = [abs(w) for k, w in brow.items() if k not in {("expression", 12), ("expression", 13)}]
    assert max(others, default=0.0) < 2e-3
    corner = _terms(j["lip_corner_left"])
    assert corner[("expression", 1)] == pytest.approx(0.10, abs=2e-3)
    assert corner[("expression", 10)] == pytest.approx(0.06, abs=2e-3)
    assert j["lip_corner_left"].offset == pytest.approx(-0.02, abs=2e-3)
    # neck_pitch already uses neck_pose only: the jaw term is not found without --fields
    assert set(_terms(j["neck_pitch"])) <= {("neck_pose", i) for i in range(3)}
    new2, fits2 = calibrate(cfg, load_samples(path), fields=("neck_pose", "jaw_pose"))
    pitch = _terms({x.name: x for x in new2.joints}["neck_pitch"])
    assert pitch[("neck_pose", 0)] == pytest.approx(0.9, abs=0.02)
    assert pitch[("jaw_pose", 0)] == pytest.approx(0.3, abs=0.02)
    for f in fits2:
        if f.name == "neck_pitch":
            assert f.rms == pytest.approx(0.002, rel=0.2) and f.r2 > 0.99
    # untouched joints keep everything
    assert {x.name: x for x in new.joints}["jaw"] == {x.name: x for x in cfg.joints}["jaw"]


def test_weight_bounds_are_respected(tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, **_pairs())
    cfg = load_head_config(REFERENCE)
    new, _ = calibrate(cfg, load_samples(path), fields=("neck_pose", "jaw_pose"), weight_bound=0.5)
    for joint in new.joints:
        if joint.name in ("brow_left", "lip_corner_left", "neck_pitch"):
            assert all(abs(t.weight) <= 0.5 + 1e-12 for t in joint.expression)
    pitch = _terms({x.name: x for x in new.joints}["neck_pitch"])
    assert pitch[("neck_pose", 0)] == pytest.approx(0.5)  # true weight 0.9, held at the bound


def test_cli_writes_config_and_report(tmp_path, capsys):
    path = tmp_path / "pairs.csv"
    d = _pairs(n=300)
    cols = [f"expression_{i}" for i in range(50)] + ["neck_pose_0", "neck_pose_1", "neck_pose_2", "jaw_pose_0"]
    values = np.hstack([d["expression"], d["neck_pose"], d["jaw_pose"][:, :1], d["joint_positions"]])
    header = ",".join(cols + list(d["joint_names"]))
    rows = [",".join(f"{v:.9g}" for v in r) for r in values]
    rows[5] = ",".join(rows[5].split(",")[:-1] + [""])  # one pose not recorded
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "fitted.yaml"
    assert main(["calibrate", "--samples", str(path), "--config", str(REFERENCE), "--out", str(out),
                 "--fields", "expression,neck_pose,jaw_pose"]) == 0
    text = capsys.readouterr().out
    assert "RMS error" in text and "neck_pitch" in text and "R^2" in text
    assert "299" in text  # neck_pitch lost the unrecorded sample
    cfg = load_head_config(out)
    assert _terms({x.name: x for x in cfg.joints}["brow_left"])[("expression", 12)] == pytest.approx(0.08, abs=3e-3)
    assert out.read_text().startswith("# Reference head")  # the header comments are kept
    # an existing --out is not replaced without --force
    assert main(["calibrate", "--samples", str(path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "no such samples file"),
    (b"", "empty file"),
    (b"not a zip", "not a readable .npz"),
    ("missing", "no 'joint_positions' array"),
    ("unknown_joint", "not in the config: nose"),
    ("nan_flame", "must be finite"),
    ("shape", "joint_positions must be"),
])
def test_bad_samples_give_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.npz"
    d = _pairs(n=20)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "missing":
        del d["joint_positions"]
        np.savez(path, **d)
    elif content == "unknown_joint":
        d["joint_names"] = np.array(["brow_left", "nose", "neck_pitch"])
        np.savez(path, **d)
    elif content == "nan_flame":
        d["expression"][3, 3] = np.nan
        np.savez(path, **d)
    elif content == "shape":
        d["joint_positions"] = d["joint_positions"][:, :2]
        np.savez(path, **d)
    code = main(["calibrate", "--samples", str(path), "--out", str(tmp_path / "o.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("facebot: error: ") and message in err, err
    assert not (tmp_path / "o.yaml").exists()


def test_bad_csv_and_fields(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("expression_0,brow_left\n1.0,abc\n")
    with pytest.raises(CalibrationError, match="line 2: not a number"):
        load_samples(path)
    path.write_text("expression_0,brow_left\n1.0,0.1\n2.0,0.2\n")
    with pytest.raises(CalibrationError, match="--fields"):
        calibrate(load_head_config(REFERENCE), load_samples(path), fields=("nose",))


def test_reference_config_is_reproducible(tmp_path):
    """config/head_reference.yaml's fitted joints are what the documented command makes."""
    path = tmp_path / "ref.npz"
    np.savez(path, **reference_samples())
    out = tmp_path / "ref.yaml"
    assert main(["calibrate", "--samples", str(path), "--config", str(REFERENCE), "--out", str(out)]) == 0
    assert out.read_text() == REFERENCE.read_text()
