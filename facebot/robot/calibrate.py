"""Fitting the FLAME -> joint map of a head config from paired samples (``facebot calibrate``).

Samples pair FLAME frames with the joint positions someone chose for them (an animator
posing the robot to match a face, a puppeteering session, or a synthetic mapping):

* ``.npz``: the FLAME track arrays as ``FlameTrack.save_npz`` writes them
  (``expression [N,E]``, ``jaw_pose [N,3]``, ``neck_pose [N,3]``, ``eye_pose [N,6]``,
  ``eyelids [N,2]``; missing fields count as zeros; DualTalk ``exp``/``pose`` also accepted),
  plus ``joint_names [J]`` (strings) and ``joint_positions [N,J]`` (radians). A NaN position
  means "not recorded for this joint in this sample" and only drops that pair.
* ``.csv``: a header row; FLAME columns named ``<field>_<i>`` (``expression_0``,
  ``jaw_pose_0``, ...), every other column a joint position named by its joint (an empty cell
  = not recorded); an optional ``stamp_ns`` column is ignored.

For every joint in the samples, the weights of its expression terms and its offset are fitted
by bounded linear least squares (``scipy.optimize.lsq_linear``; weights within
``+-weight_bound``, a small ridge on the weights (default 1e-6 per sample), ``gain`` kept as configured) over every
component of the chosen FLAME fields (default: the fields the joint already uses, or
``expression`` for a joint with no terms yet). Terms with ``|weight| < min_weight`` are dropped
and the rest refitted. Everything else in the config is kept; the file's leading comment block
is copied to the output.

The reference head's brows and lip corners (config/head_reference.yaml) come from
``reference_samples``: random face controls (each active with probability 1/2, uniform in
[0, 1]) turned into FLAME by ``controls_to_flame`` with the default control basis, and joint
positions from this designed map (plus 0.003 rad Gaussian noise, seed 0, 2000 samples)::

    brow_{left,right}       = 0.30 brow_raise - 0.25 brow_furrow
    lip_corner_{left,right} = 0.30 smile + 0.12 lip_stretch - 0.10 lip_round

The fit expresses these in FLAME expression components, i.e. it inverts the control basis.
Reproduce the file with::

    python -m facebot.robot.calibrate reference-samples --out /tmp/head_ref.npz
    facebot calibrate --samples /tmp/head_ref.npz --config config/head_reference.yaml \\
        --out config/head_reference.yaml --force
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from facebot.io.atomic import atomic_path
from facebot.robot.actuators import (
    FEATURE_DIM, FIELD_SIZES, FIELDS, HeadConfig, Term, config_to_dict, feature_index,
    load_head_config,
)
from facebot.errors import FacebotError

REFERENCE_TARGETS: dict[str, dict[str, float]] = {
    "brow_left": {"brow_raise": 0.30, "brow_furrow": -0.25},
    "brow_right": {"brow_raise": 0.30, "brow_furrow": -0.25},
    "lip_corner_left": {"smile": 0.30, "lip_stretch": 0.12, "lip_round": -0.10},
    "lip_corner_right": {"smile": 0.30, "lip_stretch": 0.12, "lip_round": -0.10},
}
REFERENCE_NOISE_RAD = 0.003


class CalibrationError(FacebotError):
    """A problem with the samples or the options; ``str()`` is one line."""


@dataclass
class Samples:
    features: np.ndarray  # [N, FEATURE_DIM]
    n_expression: int  # expression columns present in the file
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # [N, J], NaN = not recorded


@dataclass
class JointFit:
    name: str
    n: int
    terms: tuple[Term, ...]
    offset: float
    rms: float
    r2: float


# ------------------------------------------------------------------------------------------
# samples


def load_samples(path: str | Path) -> Samples:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such samples file")
    if path.stat().st_size == 0:
        raise CalibrationError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".csv":
        return _load_csv(path)
    raise CalibrationError(f"{path}: samples must be a .npz or .csv file")


def _load_npz(path: Path) -> Samples:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # zipfile / pickle / format errors all mean "not an npz"
        raise CalibrationError(f"{path}: not a readable .npz file ({type(err).__name__})") from None
    for key in ("joint_names", "joint_positions"):
        if key not in arrays:
            raise CalibrationError(f"{path}: no '{key}' array (see facebot/robot/calibrate.py for the layout)")
    if "expression" not in arrays and "exp" in arrays and "pose" in arrays:
        pose = np.asarray(arrays["pose"], np.float64)
        if pose.ndim != 2 or pose.shape[1] != 6:
            raise CalibrationError(f"{path}: DualTalk 'pose' must be [N, 6], got {list(pose.shape)}")
        arrays["expression"], arrays["neck_pose"], arrays["jaw_pose"] = arrays["exp"], pose[:, :3], pose[:, 3:]
    pos = np.asarray(arrays["joint_positions"], np.float64)
    if pos.ndim == 1:
        pos = pos[:, None]
    names = tuple(str(n) for n in np.asarray(arrays["joint_names"]).reshape(-1))
    if pos.ndim != 2 or pos.shape[1] != len(names):
        raise CalibrationError(f"{path}: joint_positions must be [N, {len(names)}] (one column per joint_names entry), got {list(pos.shape)}")
    n = pos.shape[0]
    feats = np.zeros((n, FEATURE_DIM))
    n_exp = 0
    present = [f for f in FIELDS if f in arrays]
    if not present:
        raise CalibrationError(f"{path}: no FLAME arrays ({', '.join(FIELDS)})")
    for name in present:
        a = np.asarray(arrays[name], np.float64)
        if a.ndim != 2 or a.shape[0] != n or not 1 <= a.shape[1] <= FIELD_SIZES[name] or \
                (name != "expression" and a.shape[1] != FIELD_SIZES[name]):
            raise CalibrationError(f"{path}: '{name}' must be [{n}, {FIELD_SIZES[name] if name != 'expression' else 'E'}], got {list(a.shape)}")
        start = feature_index(name, 0)
        feats[:, start:start + a.shape[1]] = a
        if name == "expression":
            n_exp = a.shape[1]
    return _checked(path, Samples(feats, n_exp, names, pos))


_COLUMN = re.compile(r"^(" + "|".join(FIELDS) + r")_(\d+)$")


def _load_csv(path: Path) -> Samples:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CalibrationError(f"{path}: not a readable CSV file ({type(err).__name__})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise CalibrationError(f"{path}: needs a header row and at least one sample")
    header = [h.strip() for h in rows[0]]
    flame_cols, joint_cols = [], []
    for i, h in enumerate(header):
        m = _COLUMN.match(h)
        if m:
            if int(m.group(2)) >= FIELD_SIZES[m.group(1)]:
                raise CalibrationError(f"{path}: column {h!r} is past the end of {m.group(1)}")
            flame_cols.append((i, feature_index(m.group(1), int(m.group(2)))))
        elif h != "stamp_ns":
            if not h:
                raise CalibrationError(f"{path}: empty column name in the header")
            joint_cols.append((i, h))
    if not flame_cols or not joint_cols:
        raise CalibrationError(f"{path}: needs FLAME columns (<field>_<i>) and joint columns")
    n = len(rows) - 1
    feats = np.zeros((n, FEATURE_DIM))
    pos = np.full((n, len(joint_cols)), np.nan)
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise CalibrationError(f"{path}: line {r + 2} has {len(row)} fields, the header has {len(header)}")
        try:
            for i, k in flame_cols:
                feats[r, k] = float(row[i])
            for j, (i, _) in enumerate(joint_cols):
                if row[i].strip():
                    pos[r, j] = float(row[i])
        except ValueError:
            raise CalibrationError(f"{path}: line {r + 2}: not a number") from None
    n_exp = 1 + max((k for _, k in flame_cols if k < feature_index("jaw_pose", 0)), default=-1)
    return _checked(path, Samples(feats, n_exp, tuple(h for _, h in joint_cols), pos))


def _checked(path: Path, s: Samples) -> Samples:
    if not np.isfinite(s.features).all():
        raise CalibrationError(f"{path}: FLAME values must be finite (found NaN or inf)")
    if np.isinf(s.joint_positions).any():
        raise CalibrationError(f"{path}: joint positions must be finite or NaN (found inf)")
    dup = sorted({n for n in s.joint_names if s.joint_names.count(n) > 1})
    if dup:
        raise CalibrationError(f"{path}: joint(s) listed twice: {', '.join(dup)}")
    return s


# ------------------------------------------------------------------------------------------
# fitting


def _columns(fields: tuple[str, ...], n_expression: int) -> list[tuple[str, int]]:
    cols = []
    for f in fields:
        size = n_expression if f == "expression" else FIELD_SIZES[f]
        cols.extend((f, i) for i in range(size))
    return cols


def fit_joint(x: np.ndarray, y: np.ndarray, gain: float, weight_bound: float = 5.0,
              ridge: float = 1e-6, min_weight: float = 1e-3) -> tuple[np.ndarray, float]:
    """Weights ``w [K]`` and offset with ``y ~= offset + gain * x @ w``, ``|w| <= weight_bound``,
    minimising ``mean(residual^2) + ridge * |w|^2``; weights below ``min_weight`` are set to 0
    and the others refitted. A small ridge makes the fit well-posed when FLAME components move
    together (always, for samples made from a few face controls)."""
    from scipy.optimize import lsq_linear

    n, k = x.shape
    active = np.std(x, axis=0) > 1e-12 if n > 1 else np.zeros(k, bool)
    w = np.zeros(k)
    offset = float(np.mean(y))
    for _ in range(10):
        cols = np.flatnonzero(active)
        a = np.hstack([gain * x[:, cols], np.ones((n, 1))])
        b = y.copy()
        if ridge > 0 and cols.size:
            reg = np.hstack([math.sqrt(ridge * n) * np.eye(cols.size), np.zeros((cols.size, 1))])
            a, b = np.vstack([a, reg]), np.concatenate([b, np.zeros(cols.size)])
        lb = np.concatenate([np.full(cols.size, -weight_bound), [-np.inf]])
        ub = np.concatenate([np.full(cols.size, weight_bound), [np.inf]])
        res = lsq_linear(a, b, bounds=(lb, ub), method="bvls" if cols.size < 200 else "trf")
        w = np.zeros(k)
        w[cols] = res.x[:-1]
        offset = float(res.x[-1])
        tiny = active & (np.abs(w) < min_weight)
        if not tiny.any():
            break
        active &= ~tiny
        w[tiny] = 0.0
    return w, offset


def calibrate(config: HeadConfig, samples: Samples, fields: tuple[str, ...] | None = None,
              weight_bound: float = 5.0, ridge: float = 1e-6, min_weight: float = 1e-3,
              digits: int = 6) -> tuple[HeadConfig, list[JointFit]]:
    """Refits every joint named in the samples; returns the new config and per-joint fits."""
    if not weight_bound > 0 or ridge < 0 or min_weight < 0:
        raise CalibrationError("need weight_bound > 0, ridge >= 0, min_weight >= 0")
    by_name = {j.name: j for j in config.joints}
    unknown = [n for n in samples.joint_names if n not in by_name]
    if unknown:
        raise CalibrationError(f"samples name joint(s) not in the config: {', '.join(unknown)} "
                               f"(config has {', '.join(by_name)})")
    if fields is not None:
        bad = [f for f in fields if f not in FIELDS]
        if bad or not fields:
            raise CalibrationError(f"--fields must name some of {', '.join(FIELDS)}, got {','.join(fields)}")
    new_joints = {}
    fits = []
    for j, name in enumerate(samples.joint_names):
        joint = by_name[name]
        rows = np.isfinite(samples.joint_positions[:, j])
        if rows.sum() < 2:
            raise CalibrationError(f"joint {name}: fewer than 2 recorded samples")
        use = fields or tuple(dict.fromkeys(t.field for t in joint.expression)) or ("expression",)
        if "expression" in use and samples.n_expression == 0:
            raise CalibrationError(f"joint {name}: fitting on expression but the samples have no expression")
        cols = _columns(use, samples.n_expression)
        x = samples.features[rows][:, [feature_index(f, i) for f, i in cols]]
        y = samples.joint_positions[rows, j]
        w, offset = fit_joint(x, y, joint.gain, weight_bound, ridge, min_weight)
        w = np.array([float(f"{v:.{digits}g}") for v in w])
        offset = float(f"{offset:.{digits}g}") if abs(offset) >= 10 ** -(digits + 3) else 0.0
        terms = tuple(Term(f, i, float(v)) for (f, i), v in zip(cols, w) if v != 0.0)
        pred = offset + joint.gain * x @ w
        resid = y - pred
        ss_tot = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
        fits.append(JointFit(name, int(rows.sum()), terms, offset, float(np.sqrt((resid ** 2).mean())), r2))
        new_joints[name] = dataclasses.replace(joint, expression=terms, offset=offset)
    joints = tuple(new_joints.get(j.name, j) for j in config.joints)
    try:
        return dataclasses.replace(config, joints=joints), fits
    except ValueError as err:
        raise CalibrationError(f"fitted config is invalid: {err}") from None


def format_report(fits: list[JointFit]) -> str:
    lines = [f"{'joint':<18} {'samples':>7} {'terms':>5} {'RMS error (rad)':>15} {'R^2':>7}"]
    for f in fits:
        r2 = "n/a" if math.isnan(f.r2) else f"{f.r2:.4f}"
        lines.append(f"{f.name:<18} {f.n:>7} {len(f.terms):>5} {f.rms:>15.5f} {r2:>7}")
    return "\n".join(lines)


def config_yaml(config: HeadConfig, header: str = "") -> str:
    body = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None, width=120)
    return header + body


def leading_comments(path: str | Path) -> str:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            out.append(line)
        else:
            break
    return "".join(l + "\n" for l in out)


def run(samples_path, config_path, out_path, fields: str | None = None, force: bool = False,
        weight_bound: float = 5.0, ridge: float = 1e-6, min_weight: float = 1e-3) -> str:
    """What ``facebot calibrate`` does; returns the report. Raises CalibrationError/ConfigError."""
    out = Path(out_path)
    if out.exists() and not force:
        raise CalibrationError(f"{out}: already exists (use --force to replace it)")
    config = load_head_config(config_path)
    samples = load_samples(samples_path)
    field_list = tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else None
    new, fits = calibrate(config, samples, field_list, weight_bound, ridge, min_weight)
    text = config_yaml(new, leading_comments(config_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a full disk or a bad write leaves the old file as it was
        tmp.write_text(text)
        load_head_config(tmp)  # what was written reads back, before it replaces anything
    return format_report(fits) + f"\nwrote {out}"


# ------------------------------------------------------------------------------------------
# synthetic reference pairs


def reference_samples(n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """The synthetic pairs behind config/head_reference.yaml (module docstring)."""
    from facebot.face.controls import CONTROL_INDEX, N_CONTROLS, controls_to_flame, default_basis
    from facebot.face.flame import N_EXPRESSION

    rng = np.random.default_rng(seed)
    basis = default_basis()
    controls = rng.uniform(0.0, 1.0, (n, N_CONTROLS)) * (rng.uniform(size=(n, N_CONTROLS)) < 0.5)
    exp = np.zeros((n, N_EXPRESSION), np.float32)
    jaw = np.zeros((n, 3), np.float32)
    for i in range(n):
        f = controls_to_flame(controls[i], basis)
        exp[i], jaw[i] = f["expression"], f["jaw_pose"]
    names = list(REFERENCE_TARGETS)
    pos = np.zeros((n, len(names)))
    for j, name in enumerate(names):
        for control, k in REFERENCE_TARGETS[name].items():
            pos[:, j] += k * controls[:, CONTROL_INDEX[control]]
    pos += rng.normal(0.0, REFERENCE_NOISE_RAD, pos.shape)
    return {
        "expression": exp, "jaw_pose": jaw, "neck_pose": np.zeros((n, 3), np.float32),
        "eye_pose": np.zeros((n, 6), np.float32), "eyelids": np.zeros((n, 2), np.float32),
        "stamp_ns": np.arange(n, dtype=np.int64) * 40_000_000, "sequence": np.arange(n, dtype=np.int64),
        "source": np.zeros(n, np.uint8), "fps": np.int64(25),
        "joint_names": np.array(names), "joint_positions": pos,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facebot.robot.calibrate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("reference-samples", help="write the synthetic pairs behind config/head_reference.yaml")
    ref.add_argument("--out", required=True)
    ref.add_argument("--n", type=int, default=2000)
    ref.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with atomic_path(args.out) as tmp:
        np.savez(tmp, **reference_samples(args.n, args.seed))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
