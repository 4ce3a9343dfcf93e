"""ARKit-style blendshape scores (MediaPipe's 52) -> FLAME jaw opening and expression.

A linear map ``[jaw_pose[0], expression[:E]] = W @ blendshapes + offset``, fitted with the
tools of ``facebot calibrate`` (``facebot.robot.calibrate.fit_joint``: bounded least squares,
weights within +-5, a small ridge, tiny weights dropped and the rest refitted), one output at a
time, on paired samples made from the project's face control basis (``facebot.face.controls``):

1. ``N_SAMPLES`` random control vectors, seed 0, each of the 9 controls active with
   probability 1/2 and uniform in [0, 1] (as ``calibrate.reference_samples``);
2. the blendshape scores a face making those controls shows, from the correspondence table
   ``CONTROL_BLENDSHAPES`` below (ARKit's definitions of each shape), plus crosstalk: every
   score gets |N(0, 0.03)| added, as MediaPipe's scores hover above 0 on a neutral face;
3. the FLAME targets ``controls_to_flame(controls)`` with the default basis.

The fit takes about a second (more on a busy machine), so the result ships as
``config/blendshape_flame_map.npz`` and is loaded from there; reproduce it with::

    python -m facebot.perception.blendshape_map --out config/blendshape_flame_map.npz

(a test checks that the file is what this code fits).

The map therefore reads a perceived face into the same FLAME space the procedural face and
the face codec's training data use; it inherits the basis' approximation (see
``facebot.face.controls``: the default basis is hand-set, not fitted to FLAME's PCA). Shapes
with no control (cheeks, nose, eye squints, jaw sideways) get weights near zero. Eyelids and
gaze are not in this map: they come straight from the eyeBlink / eyeLook scores
(``facebot.perception.user_flame``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facebot.package_files import config_file
from facebot.face.controls import CONTROL_INDEX, N_CONTROLS, ControlBasis, controls_to_flame, default_basis
from facebot.perception.landmarker import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES

N_SAMPLES = 1500
MAP_FILE = config_file("blendshape_flame_map.npz")
CROSSTALK = 0.03

# {control: {blendshape: score at control = 1}} (ARKit's shape definitions).
CONTROL_BLENDSHAPES: dict[str, dict[str, float]] = {
    "jaw_open": {"jawOpen": 1.0, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3},
    "lip_press": {"mouthPressLeft": 0.8, "mouthPressRight": 0.8, "mouthClose": 0.5},
    "lip_round": {"mouthPucker": 1.0, "mouthFunnel": 0.3},
    "lip_funnel": {"mouthFunnel": 1.0, "mouthPucker": 0.2},
    "lip_stretch": {"mouthStretchLeft": 1.0, "mouthStretchRight": 1.0},
    "lip_tuck": {"mouthRollLower": 1.0, "mouthShrugUpper": 0.3},
    "smile": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.3, "cheekSquintRight": 0.3},
    "brow_raise": {"browInnerUp": 1.0, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8},
    "brow_furrow": {"browDownLeft": 1.0, "browDownRight": 1.0},
}


@dataclass(frozen=True)
class BlendshapeMap:
    weights: np.ndarray  # [1 + E, 52]: row 0 is jaw_pose[0] (rad), rows 1.. the expression
    offset: np.ndarray  # [1 + E]
    rms: np.ndarray  # [1 + E] fit residual on the samples

    def __call__(self, blendshapes: np.ndarray) -> tuple[float, np.ndarray]:
        """(jaw opening in rad, expression [E]) for one face's scores."""
        y = self.weights @ np.asarray(blendshapes, np.float64) + self.offset
        return float(y[0]), y[1:].astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(path, weights=self.weights, offset=self.offset, rms=self.rms,
                 blendshapes=np.array(BLENDSHAPE_NAMES), n_samples=N_SAMPLES, crosstalk=CROSSTALK)

    @classmethod
    def load(cls, path: str | Path) -> "BlendshapeMap":
        with np.load(path, allow_pickle=False) as d:
            if tuple(d["blendshapes"]) != BLENDSHAPE_NAMES:
                raise ValueError(f"{path}: blendshape names differ from MediaPipe's 52")
            return cls(d["weights"], d["offset"], d["rms"])


def correspondence() -> np.ndarray:
    """``[N_CONTROLS, 52]``: the table as a matrix."""
    t = np.zeros((N_CONTROLS, len(BLENDSHAPE_NAMES)))
    for ctrl, shapes in CONTROL_BLENDSHAPES.items():
        for name, w in shapes.items():
            t[CONTROL_INDEX[ctrl], BLENDSHAPE_INDEX[name]] = w
    return t


def paired_samples(basis: ControlBasis, n: int = N_SAMPLES, seed: int = 0):
    """(blendshapes [n, 52], targets [n, 1 + E]) as the module docstring says."""
    rng = np.random.default_rng(seed)
    controls = rng.uniform(0, 1, (n, N_CONTROLS)) * (rng.random((n, N_CONTROLS)) < 0.5)
    shapes = np.clip(controls @ correspondence() + np.abs(rng.normal(0, CROSSTALK, (n, len(BLENDSHAPE_NAMES)))), 0, 1)
    targets = np.zeros((n, 1 + basis.n_expression))
    for i, c in enumerate(controls):
        fl = controls_to_flame(c, basis)
        targets[i, 0] = fl["jaw_pose"][0]
        targets[i, 1:] = fl["expression"]
    return shapes, targets


def fit_blendshape_map(basis: ControlBasis | None = None, n: int = N_SAMPLES, seed: int = 0) -> BlendshapeMap:
    from facebot.robot.calibrate import fit_joint

    basis = basis or default_basis()
    x, y = paired_samples(basis, n, seed)
    weights = np.zeros((y.shape[1], x.shape[1]))
    offset = np.zeros(y.shape[1])
    rms = np.zeros(y.shape[1])
    for k in range(y.shape[1]):
        if not np.any(y[:, k]):  # a component no control moves: weight 0, offset 0
            continue
        w, b = fit_joint(x, y[:, k], gain=1.0)
        weights[k], offset[k] = w, b
        rms[k] = float(np.sqrt(np.mean((x @ w + b - y[:, k]) ** 2)))
    return BlendshapeMap(weights, offset, rms)


@lru_cache(maxsize=1)
def default_map() -> BlendshapeMap:
    """The shipped fit (MAP_FILE); fitted now if the file is missing."""
    return BlendshapeMap.load(MAP_FILE) if MAP_FILE.is_file() else fit_blendshape_map()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fit the blendshape -> FLAME map (module docstring)")
    ap.add_argument("--out", default=str(MAP_FILE))
    args = ap.parse_args(argv)
    m = fit_blendshape_map()
    m.save(args.out)
    print(f"wrote {args.out}: {int((m.weights != 0).sum())} weights, fit RMS max {m.rms.max():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
