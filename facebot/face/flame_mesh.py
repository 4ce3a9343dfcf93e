"""The FLAME head model as geometry: its arrays checked, loaded from facebot's ``.npz``, and
FLAME parameters (shape, expression, jaw / neck / eye pose) turned into mesh vertices.

The ``.npz`` is written once by ``facebot flame-convert`` from the official pickle
(:mod:`facebot.face.flame_convert`); ``FlameModel.load`` reads only that
(``np.load(..., allow_pickle=False)``) and refuses ``.pkl`` files with a pointer to the command,
because unpickling a file can run any code the file names.

Layout of the FLAME arrays (FLAME 2020 / 2023; V = 5023 vertices, F = 9976 triangles):

=============== ================= ===========================================================
key             shape             meaning
=============== ================= ===========================================================
v_template      [V, 3]            mean head, metres; y up, z towards the viewer, x to the
                                  viewer's right (the head's left)
shapedirs       [V, 3, 400]       300 identity (shape) then 100 expression blendshapes
posedirs        [V, 3, 36]        pose correctives, linear in ``(R_j - I)`` of joints 1..4
J_regressor     [5, V] (sparse)   joint locations from the shaped mesh
kintree_table   [2, 5]            row 0: parent of each joint (root: -1 / 2**32-1), row 1: id
weights         [V, 5]            linear blend skinning weights
f               [F, 3]            triangles (vertex indices)
=============== ================= ===========================================================

Joints: 0 global (root, kept at identity here), 1 neck, 2 jaw, 3 left eye, 4 right eye, which
is the order of ``FlameFrame``: ``neck_pose``, ``jaw_pose``, ``eye_pose[:3]`` (left),
``eye_pose[3:]`` (right). Rotations are axis-angle; index 0 (rotation about x) is pitch, with +
moving the chin / gaze down.

Vertex computation (``FlameModel.vertices``), the standard FLAME / SMPL formulation:

1. ``v_shaped = v_template + shapedirs[..., :S] @ betas + shapedirs[..., S:S+E] @ expression``
2. ``J = J_regressor @ v_shaped`` (joint positions, [5, 3])
3. ``R_j = rodrigues(pose_j)``; ``v_posed = v_shaped + posedirs @ concat_j>=1 (R_j - I)``
4. Forward kinematics: ``G_j = G_parent(j) @ [[R_j, J_j - J_parent(j)], [0, 1]]`` (root:
   translation ``J_0``), then ``A_j = G_j`` with ``J_j`` removed (``t -= R^world_j @ J_j``) so
   that ``A_j`` maps rest-pose points to posed points.
5. Linear blend skinning: ``v = (sum_j weights[:, j] A_j) @ [v_posed, 1]``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from facebot.errors import FacebotError
from facebot.face.flame import FlameFrame

__all__ = [
    "FLAME_KEYS",
    "N_JOINTS",
    "N_POSE_FEATURES",
    "N_SHAPE",
    "NPZ_FORMAT",
    "FlameModelError",
    "flame_arrays",
    "rodrigues",
    "lbs",
    "FlameModel",
]

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
N_JOINTS = 5  # global, neck, jaw, left eye, right eye
N_POSE_FEATURES = 9 * (N_JOINTS - 1)  # 36
N_SHAPE = 300  # identity components before the expression ones in shapedirs
NPZ_FORMAT = "facebot-flame-1"
CONVERT_HINT = "facebot flame-convert MODEL.pkl MODEL.npz --i-trust-this-file"


class FlameModelError(FacebotError, ValueError):
    """A problem with a FLAME model file; ``str()`` is one line naming the file."""


def flame_arrays(arrays: dict[str, np.ndarray], where: str, n_shape: int | None = None) -> dict[str, np.ndarray]:
    """Checks the FLAME layout (shapes, finiteness, a valid kinematic tree) and returns float32 / int
    arrays in facebot's npz layout; ``FlameModelError`` names ``where`` and the problem."""
    try:
        v = np.asarray(arrays["v_template"], np.float32)
        shapedirs = np.asarray(arrays["shapedirs"], np.float32)
        posedirs = np.asarray(arrays["posedirs"], np.float32)
        jreg = np.asarray(arrays["J_regressor"], np.float32)
        kt = np.asarray(arrays["kintree_table"]).astype(np.int64)
        weights = np.asarray(arrays["weights"], np.float32)
        faces = np.asarray(arrays["f"]).astype(np.int64)
    except KeyError as err:
        raise FlameModelError(f"{where}: missing array {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise FlameModelError(f"{where}: bad array ({err})") from None

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise FlameModelError(f"{where}: {what}")

    need(v.ndim == 2 and v.shape[1] == 3 and v.shape[0] >= 3, f"v_template must be [V, 3], got {list(v.shape)}")
    nv = v.shape[0]
    need(shapedirs.ndim == 3 and shapedirs.shape[:2] == (nv, 3), f"shapedirs must be [{nv}, 3, K], got {list(shapedirs.shape)}")
    if n_shape is None:
        n_shape = N_SHAPE if shapedirs.shape[2] > N_SHAPE else 0
    need(0 <= n_shape < shapedirs.shape[2], f"shapedirs has {shapedirs.shape[2]} components, no expression ones after {n_shape} shape ones")
    need(posedirs.shape == (nv, 3, N_POSE_FEATURES), f"posedirs must be [{nv}, 3, {N_POSE_FEATURES}], got {list(posedirs.shape)}")
    need(jreg.shape == (N_JOINTS, nv), f"J_regressor must be [{N_JOINTS}, {nv}], got {list(jreg.shape)}")
    need(kt.shape == (2, N_JOINTS), f"kintree_table must be [2, {N_JOINTS}], got {list(kt.shape)}")
    need(weights.shape == (nv, N_JOINTS), f"weights must be [{nv}, {N_JOINTS}], got {list(weights.shape)}")
    need(faces.ndim == 2 and faces.shape[1] == 3 and faces.shape[0] >= 1, f"f must be [F, 3], got {list(faces.shape)}")
    need(bool((faces >= 0).all() and (faces < nv).all()), "f has vertex indices out of range")
    for name, a in (("v_template", v), ("shapedirs", shapedirs), ("posedirs", posedirs), ("J_regressor", jreg), ("weights", weights)):
        need(bool(np.isfinite(a).all()), f"{name} has non-finite values")
    parents = _parents(kt)
    need(parents is not None, "kintree_table is not a tree rooted at joint 0 with parents before children")
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": jreg,
        "kintree_table": kt,
        "weights": weights,
        "f": faces.astype(np.int32),
        "n_shape": np.int64(n_shape),
    }


def _parents(kt: np.ndarray) -> np.ndarray | None:
    if not np.array_equal(kt[1], np.arange(N_JOINTS)):
        return None
    parents = kt[0].copy()
    if parents[0] not in (-1, 2**32 - 1, 2**31 - 1):
        return None
    parents[0] = -1
    for j in range(1, N_JOINTS):
        if not 0 <= parents[j] < j:
            return None
    return parents


def rodrigues(rotvec) -> np.ndarray:
    """Axis-angle ``[..., 3]`` -> rotation matrices ``[..., 3, 3]`` (float64).

    ``R = I + a K + b K^2`` with ``K`` the cross-product matrix of ``r``, ``theta = |r|``,
    ``a = sin(theta)/theta`` and ``b = (1 - cos(theta))/theta^2``; near 0 the Taylor series
    of ``a`` and ``b`` is used, so tiny and zero rotations are exact and smooth.
    """
    r = np.asarray(rotvec, np.float64)
    theta2 = np.sum(r * r, axis=-1)[..., None, None]
    theta = np.sqrt(theta2)
    small = theta2 < 1e-8
    safe_t = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe_t) / safe_t)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe_t)) / (safe_t * safe_t))
    k = np.zeros(r.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2] = -r[..., 2], r[..., 1]
    k[..., 1, 0], k[..., 1, 2] = r[..., 2], -r[..., 0]
    k[..., 2, 0], k[..., 2, 1] = -r[..., 1], r[..., 0]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + a * k + b * (k @ k)


def lbs(v_shaped: np.ndarray, joints: np.ndarray, rotmats: np.ndarray, parents: np.ndarray,
        weights: np.ndarray, posedirs_flat: np.ndarray) -> np.ndarray:
    """Pose correctives plus linear blend skinning (steps 3-5 of the module docstring).

    ``v_shaped [V, 3]``, ``joints [K, 3]`` (rest positions), ``rotmats [K, 3, 3]`` (local
    rotations, parents before children), ``parents [K]`` (-1 for the root), ``weights [V, K]``,
    ``posedirs_flat [V*3, 9*(K-1)]``. Returns posed vertices ``[V, 3]`` (float64).

    The products use ``np.einsum`` rather than BLAS: single-threaded and predictable (a BLAS
    thread pool contending with other processes on a 2-core robot computer cost 10x here).
    """
    k = rotmats.shape[0]
    feat = (rotmats[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + np.einsum("ij,j->i", posedirs_flat, feat).reshape(-1, 3)
    world = np.zeros((k, 4, 4))
    for j in range(k):
        local = np.eye(4)
        local[:3, :3] = rotmats[j]
        p = parents[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world[j] = local if p < 0 else world[p] @ local
    rel = world.copy()
    rel[:, :3, 3] -= np.einsum("kij,kj->ki", world[:, :3, :3], joints)
    t = np.einsum("vk,kn->vn", weights, rel.reshape(k, 16)).reshape(-1, 4, 4)
    return np.einsum("vij,vj->vi", t[:, :3, :3], v_posed) + t[:, :3, 3]


class FlameModel:
    """A FLAME model loaded from facebot's ``.npz`` (never from a pickle)."""

    def __init__(self, arrays: dict[str, np.ndarray], where: str = "FLAME model"):
        a = flame_arrays(arrays, where, int(arrays["n_shape"]) if "n_shape" in arrays else None)
        self.where = where
        self.v_template = a["v_template"].astype(np.float64)
        self.n_shape = int(a["n_shape"])
        nv = self.v_template.shape[0]
        sd = a["shapedirs"].astype(np.float64)
        self.shapedirs_shape = np.ascontiguousarray(sd[:, :, : self.n_shape].reshape(nv * 3, self.n_shape))
        self.shapedirs_expression = np.ascontiguousarray(sd[:, :, self.n_shape:].reshape(nv * 3, -1))
        self.posedirs_flat = a["posedirs"].astype(np.float64).reshape(nv * 3, N_POSE_FEATURES)
        self.J_regressor = a["J_regressor"].astype(np.float64)
        self.parents = _parents(a["kintree_table"])
        self.weights = a["weights"].astype(np.float64)
        self.faces = a["f"]

    @classmethod
    def load(cls, path: str | Path) -> "FlameModel":
        """Loads a ``.npz`` written by ``flame-convert`` (``allow_pickle=False``)."""
        p = Path(path)
        if not p.is_file():
            raise FlameModelError(f"{p}: no such file")
        with open(p, "rb") as fh:
            head = fh.read(4)
        if p.suffix == ".pkl" or head[:1] == b"\x80":
            raise FlameModelError(
                f"{p}: FLAME pickles are never loaded directly (unpickling can run code); convert it once "
                f"with: {CONVERT_HINT}"
            )
        if head[:2] != b"PK":
            raise FlameModelError(f"{p}: not a .npz file")
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise FlameModelError(f"{p}: unreadable npz ({err})") from None
        return cls(arrays, str(p))

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.shapedirs_expression.shape[1])

    def shaped(self, expression=None, betas=None) -> np.ndarray:
        """``v_template`` plus shape and expression blendshapes (step 1), ``[V, 3]``.

        Coefficients beyond the model's count are ignored; missing ones count as 0."""
        flat = self.v_template.reshape(-1).copy()
        for coeffs, dirs in ((betas, self.shapedirs_shape), (expression, self.shapedirs_expression)):
            if coeffs is None:
                continue
            c = np.asarray(coeffs, np.float64).reshape(-1)
            n = min(c.shape[0], dirs.shape[1])
            if n:
                flat += np.einsum("ij,j->i", dirs[:, :n], c[:n])
        return flat.reshape(-1, 3)

    def joints(self, v_shaped: np.ndarray) -> np.ndarray:
        return np.einsum("kv,vc->kc", self.J_regressor, v_shaped)

    def vertices(self, frame: FlameFrame | None = None, *, expression=None, jaw_pose=None, neck_pose=None,
                 eye_pose=None, betas=None, return_joints: bool = False):
        """Posed vertices ``[V, 3]`` (float64) for a frame (or the separate arrays; keyword
        arrays override the frame's). The global rotation is identity. Values are used as
        given: callers that may see non-finite input (the renderer) neutralise it first."""
        if frame is not None:
            expression = frame.expression if expression is None else expression
            jaw_pose = frame.jaw_pose if jaw_pose is None else jaw_pose
            neck_pose = frame.neck_pose if neck_pose is None else neck_pose
            eye_pose = frame.eye_pose if eye_pose is None else eye_pose
        pose = np.zeros((N_JOINTS, 3))
        for j, value in ((1, neck_pose), (2, jaw_pose)):
            if value is not None:
                pose[j] = np.asarray(value, np.float64).reshape(3)
        if eye_pose is not None:
            pose[3:5] = np.asarray(eye_pose, np.float64).reshape(2, 3)
        v_shaped = self.shaped(expression, betas)
        joints = self.joints(v_shaped)
        verts = lbs(v_shaped, joints, rodrigues(pose), self.parents, self.weights, self.posedirs_flat)
        return (verts, joints) if return_joints else verts
