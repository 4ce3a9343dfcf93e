"""Named, interpretable face controls and their linear map onto FLAME.

The procedural face (and anything else that wants to think in "mouth open", "lips pressed",
"brows up" rather than in PCA coefficients) works in a small control space. Every control is a
number in ``[0, 1]``; 0 is the neutral face.

========== ===============================================================================
control    meaning (at 1.0)
========== ===============================================================================
jaw_open   jaw fully open (``jaw_pose[0] = jaw_max_rad``, 0.35 rad by default), lips parted
lip_press  lips closed and pressed together (bilabials p/b/m)
lip_round  lips rounded and protruded (w, u:, oU)
lip_funnel lips flared into a funnel (S, Z, tS, dZ, r)
lip_stretch mouth corners pulled sideways, lips thinned (i:, s, z, e)
lip_tuck   lower lip raised against the upper teeth (f, v)
smile      mouth corners up, cheeks raised
brow_raise inner and outer brows raised
brow_furrow brows lowered and drawn together
========== ===============================================================================

The map is linear and a pure function::

    jaw_pose   = [jaw_max_rad * jaw_open, 0, 0]
    expression = B @ controls          (B: n_expression x N_CONTROLS, ``ControlBasis``)

``flame_to_controls`` is its least-squares inverse (the jaw angle is weighted in control
units, i.e. divided by ``jaw_max_rad``), so a frame written from controls reads back exactly
and any other FLAME frame (a model's, a perceived face's) gets the closest controls.

**The default basis is approximate.** It is hand-set, not fitted to the FLAME model: in the
FLAME 2020 expression PCA the leading components carry most of the mouth's variance (opening,
smile / corner stretch, pucker), and brow motion shows up among the early-to-middle
components, so the defaults put the mouth controls (lips, smile) on components 0-10 and the
brows on 12-15, with a few cross-terms. The exact sign and mixture of each real component is not claimed. For
faithful geometry, fit a basis from paired examples (``ControlBasis.fit``) and pass it to every
user. The face display renderer and the actuator mapping downstream must read controls through
the **same** basis the producer used (``default_basis()`` unless configured), otherwise the
readout does not invert what was written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from facebot.face.flame import N_EXPRESSION, MAX_EXPRESSION, FlameFrame, FrameSource

CONTROL_NAMES: tuple[str, ...] = (
    "jaw_open",
    "lip_press",
    "lip_round",
    "lip_funnel",
    "lip_stretch",
    "lip_tuck",
    "smile",
    "brow_raise",
    "brow_furrow",
)
N_CONTROLS = len(CONTROL_NAMES)
CONTROL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CONTROL_NAMES)}
# Lip / mouth controls (what speech drives); the rest are affect controls.
LIP_CONTROLS: tuple[str, ...] = CONTROL_NAMES[:6]
CONTROL_MIN = 0.0
CONTROL_MAX = 1.0

JAW_MAX_RAD = 0.35  # jaw_open = 1 -> jaw_pose[0] = 0.35 rad (about 20 degrees)
# |expression_i| never exceeds this for controls in [0, 1] with the default basis (checked in
# ``default_basis``); ``controls_to_flame`` clips to it whatever basis is configured.
EXPRESSION_LIMIT = 3.0

# Hand-set default directions: {control: {expression component: weight}}. Approximate (see
# the module docstring); units are FLAME expression coefficients (roughly "standard
# deviations" of the PCA, so |value| <= ~2 stays within the space's plausible range).
_DEFAULT_DIRECTIONS: dict[str, dict[int, float]] = {
    "jaw_open": {0: 0.6, 3: 0.15},  # lips part along with the jaw
    "lip_press": {0: -0.5, 6: 1.0, 9: 0.4},
    "lip_round": {2: 1.2, 5: 0.6, 1: -0.3},
    "lip_funnel": {2: 0.5, 7: 1.0, 0: 0.2},
    "lip_stretch": {1: 0.6, 3: 0.9, 2: -0.3},
    "lip_tuck": {4: 1.0, 8: 0.5, 0: -0.2},
    "smile": {1: 1.2, 10: 0.6, 3: -0.2},
    "brow_raise": {12: 1.0, 14: 0.5},
    "brow_furrow": {13: 1.0, 15: 0.5, 12: -0.3},
}


@dataclass(frozen=True)
class ControlBasis:
    """Linear map controls -> FLAME (see the module docstring).

    ``expression`` is ``[n_expression, N_CONTROLS]``: column ``j`` is the expression offset of
    control ``j`` at 1.0. ``jaw_max_rad`` scales ``jaw_open`` onto ``jaw_pose[0]``.
    """

    expression: np.ndarray
    jaw_max_rad: float = JAW_MAX_RAD
    _pinv: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        b = np.array(self.expression, dtype=np.float64, copy=True)
        if b.ndim != 2 or b.shape[1] != N_CONTROLS or not 1 <= b.shape[0] <= MAX_EXPRESSION:
            raise ValueError(
                f"control basis must be [n_expression (1..{MAX_EXPRESSION}), {N_CONTROLS}], "
                f"got {list(b.shape)}"
            )
        if not np.isfinite(b).all():
            raise ValueError("control basis has non-finite entries")
        if not (np.isfinite(self.jaw_max_rad) and 0.0 < self.jaw_max_rad <= 0.6):
            raise ValueError(f"jaw_max_rad must be in (0, 0.6] rad, got {self.jaw_max_rad}")
        b.setflags(write=False)
        object.__setattr__(self, "expression", b)
        pinv = np.linalg.pinv(self.stacked())
        pinv.setflags(write=False)
        object.__setattr__(self, "_pinv", pinv)

    @property
    def n_expression(self) -> int:
        return int(self.expression.shape[0])

    def stacked(self) -> np.ndarray:
        """``[1 + n_expression, N_CONTROLS]``: row 0 is ``jaw_pose[0] / jaw_max_rad``."""
        jaw_row = np.zeros((1, N_CONTROLS))
        jaw_row[0, CONTROL_INDEX["jaw_open"]] = 1.0
        return np.vstack([jaw_row, self.expression])

    def expression_step_bound(self, control_step: float) -> float:
        """Largest |change| of any expression term when no control changes by more than
        ``control_step``: ``control_step * max_i sum_j |B_ij|``."""
        return float(control_step * np.abs(self.expression).sum(axis=1).max())

    def expression_bound(self) -> float:
        """Largest |expression_i| reachable with controls in [0, 1] (before clipping)."""
        pos = np.clip(self.expression, 0, None).sum(axis=1)
        neg = np.clip(self.expression, None, 0).sum(axis=1)
        return float(max(pos.max(), -neg.min()))

    @classmethod
    def fit(cls, controls, expression, jaw_max_rad: float = JAW_MAX_RAD) -> "ControlBasis":
        """Least-squares basis from paired examples: ``controls [N, K]`` (e.g. ARKit-style
        blendshape weights mapped to our names) and the FLAME ``expression [N, E]`` fitted to
        the same faces. ``expression ~= controls @ B.T``."""
        c = np.asarray(controls, np.float64)
        e = np.asarray(expression, np.float64)
        if c.ndim != 2 or c.shape[1] != N_CONTROLS or e.ndim != 2 or e.shape[0] != c.shape[0]:
            raise ValueError(f"need controls [N, {N_CONTROLS}] and expression [N, E] with equal N")
        bt, *_ = np.linalg.lstsq(c, e, rcond=None)
        return cls(expression=bt.T, jaw_max_rad=jaw_max_rad)


def default_basis(n_expression: int = N_EXPRESSION, jaw_max_rad: float = JAW_MAX_RAD) -> ControlBasis:
    """The documented approximate basis (module docstring), for ``n_expression`` >= 16 terms."""
    if not 16 <= n_expression <= MAX_EXPRESSION:
        raise ValueError(f"default basis needs 16..{MAX_EXPRESSION} expression terms, got {n_expression}")
    b = np.zeros((n_expression, N_CONTROLS))
    for name, direction in _DEFAULT_DIRECTIONS.items():
        for comp, w in direction.items():
            b[comp, CONTROL_INDEX[name]] = w
    basis = ControlBasis(expression=b, jaw_max_rad=jaw_max_rad)
    assert basis.expression_bound() <= EXPRESSION_LIMIT
    return basis


_DEFAULT = None


def _basis(basis: ControlBasis | None) -> ControlBasis:
    global _DEFAULT
    if basis is not None:
        return basis
    if _DEFAULT is None:
        _DEFAULT = default_basis()
    return _DEFAULT


def controls_to_array(controls) -> np.ndarray:
    """A ``(N_CONTROLS,)`` float64 array in [0, 1] from a name->value mapping (missing names
    are 0) or an array in ``CONTROL_NAMES`` order. Non-finite values become 0.

    Raises ``KeyError`` for unknown names and ``ValueError`` for a wrong-length array: those
    are programming errors, not bad sensor input.
    """
    if isinstance(controls, Mapping):
        arr = np.zeros(N_CONTROLS)
        for name, value in controls.items():
            if name not in CONTROL_INDEX:
                raise KeyError(f"unknown face control {name!r}; known: {', '.join(CONTROL_NAMES)}")
            arr[CONTROL_INDEX[name]] = float(value)
    else:
        arr = np.asarray(controls, np.float64).reshape(-1)
        if arr.shape[0] != N_CONTROLS:
            raise ValueError(f"controls array must have {N_CONTROLS} values, got {arr.shape[0]}")
        arr = arr.copy()
    arr[~np.isfinite(arr)] = 0.0
    return np.clip(arr, CONTROL_MIN, CONTROL_MAX)


def controls_to_dict(controls) -> dict[str, float]:
    arr = controls_to_array(controls)
    return {name: float(arr[i]) for i, name in enumerate(CONTROL_NAMES)}


def controls_to_flame(controls, basis: ControlBasis | None = None) -> dict[str, np.ndarray]:
    """Controls -> ``{"jaw_pose": (3,), "expression": (n_expression,)}`` float32.

    Pure and bounded: controls are clipped to [0, 1], ``jaw_pose[0]`` lies in
    ``[0, jaw_max_rad]``, expression terms in ``[-EXPRESSION_LIMIT, EXPRESSION_LIMIT]``.
    """
    b = _basis(basis)
    c = controls_to_array(controls)
    jaw = np.zeros(3, np.float32)
    jaw[0] = b.jaw_max_rad * c[CONTROL_INDEX["jaw_open"]]
    exp = np.clip(b.expression @ c, -EXPRESSION_LIMIT, EXPRESSION_LIMIT).astype(np.float32)
    return {"jaw_pose": jaw, "expression": exp}


def controls_to_frame(controls, basis: ControlBasis | None = None, **meta) -> FlameFrame:
    """A neutral-pose ``FlameFrame`` carrying the controls' jaw and expression."""
    meta.setdefault("source", FrameSource.PROCEDURAL)
    return FlameFrame(**controls_to_flame(controls, basis), **meta)


def flame_to_controls(frame, basis: ControlBasis | None = None, clip: bool = True) -> np.ndarray:
    """Least-squares controls ``(N_CONTROLS,)`` from a ``FlameFrame`` (or anything with
    ``expression`` and ``jaw_pose``, including a mapping of them).

    Expression vectors longer than the basis are cut, shorter ones zero-padded. Non-finite
    inputs count as 0. With ``clip`` the result is clipped to [0, 1] (what renderers and
    actuators want); without it the raw least-squares solution is returned.
    """
    b = _basis(basis)
    if isinstance(frame, Mapping):
        exp_in, jaw_in = frame["expression"], frame["jaw_pose"]
    else:
        exp_in, jaw_in = frame.expression, frame.jaw_pose
    exp_in = np.asarray(exp_in, np.float64).reshape(-1)
    jaw_in = np.asarray(jaw_in, np.float64).reshape(-1)
    y = np.zeros(1 + b.n_expression)
    y[0] = (jaw_in[0] if jaw_in.size else 0.0) / b.jaw_max_rad
    n = min(exp_in.shape[0], b.n_expression)
    y[1:1 + n] = exp_in[:n]
    y[~np.isfinite(y)] = 0.0
    c = b._pinv @ y
    return np.clip(c, CONTROL_MIN, CONTROL_MAX) if clip else c


def flame_to_control_dict(frame, basis: ControlBasis | None = None) -> dict[str, float]:
    return controls_to_dict(flame_to_controls(frame, basis))
