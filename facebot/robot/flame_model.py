"""The FLAME head mesh: safe conversion of the official model file, vertices, and a renderer.

**Why a conversion step.** The official FLAME model (``generic_model.pkl``, ``flame2023.pkl``)
is a Python pickle of a dict holding numpy arrays, chumpy arrays and a scipy.sparse matrix.
Unpickling a file can run any code the file names, so facebot never unpickles implicitly:

* ``facebot flame-convert INPUT.pkl OUTPUT.npz --i-trust-this-file`` is the one command that
  reads a pickle. Even then it uses ``_RestrictedUnpickler``, which resolves only the names a
  FLAME file needs (numpy array / dtype reconstruction, ``copyreg._reconstructor``, ``set``),
  turns chumpy and scipy.sparse objects into inert stand-ins (their code never runs) and
  refuses anything else with a one-line error naming the offending global.
* It writes a plain ``.npz`` (no object arrays; ``np.load(..., allow_pickle=False)`` reads it)
  and ``FlameModel.load`` reads only that, refusing ``.pkl`` files with a pointer to the
  command.

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

import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from facebot.io.atomic import atomic_path
from facebot.face.flame import FlameFrame
from facebot.errors import FacebotError

__all__ = [
    "FLAME_KEYS",
    "N_JOINTS",
    "N_SHAPE",
    "FlameModelError",
    "read_flame_pickle",
    "convert_flame_pickle",
    "rodrigues",
    "lbs",
    "FlameModel",
    "MeshRenderer",
    "synthetic_flame",
]

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
N_JOINTS = 5  # global, neck, jaw, left eye, right eye
N_POSE_FEATURES = 9 * (N_JOINTS - 1)  # 36
N_SHAPE = 300  # identity components before the expression ones in shapedirs
NPZ_FORMAT = "facebot-flame-1"
CONVERT_HINT = "facebot flame-convert MODEL.pkl MODEL.npz --i-trust-this-file"


class FlameModelError(FacebotError, ValueError):
    """A problem with a FLAME model file; ``str()`` is one line naming the file."""


# ------------------------------------------------------------------------------------------
# Restricted unpickling
# ------------------------------------------------------------------------------------------


class _Inert:
    """Placeholder for a chumpy / scipy.sparse object: records its pickled state, runs nothing."""

    kind = ""  # "chumpy" or "sparse"
    qualname = ""
    state: Any = None  # set by BUILD (``__setstate__``); None if the pickle never sets it

    def __init__(self, *args) -> None:  # REDUCE with a stand-in class
        if args:
            raise pickle.UnpicklingError(f"unexpected constructor arguments for {self.qualname}")
        self.state: Any = None

    def __setstate__(self, state) -> None:
        self.state = state


_INERT_CLASSES: dict[tuple[str, str], type] = {}


def _inert_class(kind: str, module: str, name: str) -> type:
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(f"Inert_{name}", (_Inert,), {"kind": kind, "qualname": f"{module}.{name}"})
    return _INERT_CLASSES[key]


def _safe_reconstructor(cls, base, state):
    """Stands in for ``copyreg._reconstructor``: only builds stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _Inert)) or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor used for something other than a chumpy/scipy object")
    obj = object.__new__(cls)
    obj.state = None
    return obj


def _numpy_parts():
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
    return ma


def _safe_np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy array reconstruction for a class other than numpy.ndarray")
    return _numpy_parts()._reconstruct(subtype, shape, dtype)


def _safe_codecs_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2: str -> latin-1 bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin1")


_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what a FLAME pickle needs; every other global is refused unresolved."""

    def find_class(self, module: str, name: str):
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _safe_np_reconstruct
        if module in _NUMPY_MODULES and name == "scalar":
            return _numpy_parts().scalar
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module == "chumpy" or module.startswith("chumpy."):
            return _inert_class("chumpy", module, name)
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_NAMES:
            return _inert_class("sparse", module, name)
        raise pickle.UnpicklingError(
            f"refused: the pickle asks for {module}.{name}, which is not a numpy / scipy.sparse / "
            "chumpy array class (a FLAME model needs nothing else)"
        )


def _plain_array(value, key: str, where: str) -> np.ndarray:
    """numpy array from a pickled value: ndarray, chumpy stand-in or sparse stand-in."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, _Inert) and value.kind == "chumpy":
        state = value.state if isinstance(value.state, dict) else {}
        arr = state.get("x")
        if not isinstance(arr, np.ndarray):
            raise FlameModelError(
                f"{where}: '{key}' is a chumpy {value.qualname} that is not a plain array (no 'x' data); "
                "unsupported"
            )
    elif isinstance(value, _Inert) and value.kind == "sparse":
        arr = _sparse_to_dense(value, key, where)
    else:
        raise FlameModelError(f"{where}: '{key}' is a {type(value).__name__}, expected an array")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FlameModelError(f"{where}: '{key}' has non-numeric dtype {arr.dtype}")
    return np.array(arr)


def _sparse_to_dense(value: "_Inert", key: str, where: str) -> np.ndarray:
    import scipy.sparse as sp

    state = value.state if isinstance(value.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    fmt = value.qualname.rsplit(".", 1)[-1][:3]

    def part(name):
        a = state.get(name)
        if not isinstance(a, np.ndarray) or a.dtype == object:
            raise FlameModelError(f"{where}: '{key}' ({value.qualname}) lacks a numeric '{name}' array")
        return a

    try:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > 50_000_000:
            raise ValueError
    except (TypeError, ValueError):
        raise FlameModelError(f"{where}: '{key}' ({value.qualname}) has no valid 2-D shape") from None
    try:
        if fmt == "coo":
            m = sp.coo_matrix((part("data"), (part("row"), part("col"))), shape=shape)
        elif fmt == "csc":
            m = sp.csc_matrix((part("data"), part("indices"), part("indptr")), shape=shape)
        else:
            m = sp.csr_matrix((part("data"), part("indices"), part("indptr")), shape=shape)
        m.check_format(full_check=True) if fmt != "coo" else None
        return np.asarray(m.toarray())
    except FlameModelError:
        raise
    except (ValueError, IndexError, TypeError) as err:
        raise FlameModelError(f"{where}: '{key}' is a malformed sparse matrix ({err})") from None


def read_flame_pickle(path: str | Path, *, i_trust_this_file: bool = False) -> dict[str, np.ndarray]:
    """The FLAME arrays of an official model pickle, as plain numpy arrays.

    Refuses to run without ``i_trust_this_file=True`` (the caller's explicit decision), and
    even then resolves only numpy/scipy.sparse/chumpy array classes (``_RestrictedUnpickler``).
    Raises ``FlameModelError`` with a one-line message for anything else.
    """
    p = Path(path)
    if not i_trust_this_file:
        raise FlameModelError(
            f"{p}: reading a pickle can run code stored in it; confirm the file is the official FLAME "
            "model with --i-trust-this-file (only numpy/scipy arrays are accepted even then)"
        )
    if not p.is_file():
        raise FlameModelError(f"{p}: no such file")
    data = p.read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise FlameModelError(f"{p}: {err}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as err:
        raise FlameModelError(f"{p}: not a readable FLAME pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise FlameModelError(f"{p}: expected a dict of arrays, got {type(obj).__name__}")
    missing = [k for k in FLAME_KEYS if k not in obj]
    if missing:
        raise FlameModelError(f"{p}: not a FLAME model (missing {', '.join(missing)})")
    return {k: _plain_array(obj[k], k, str(p)) for k in FLAME_KEYS}


def _validated(arrays: dict[str, np.ndarray], where: str, n_shape: int | None = None) -> dict[str, np.ndarray]:
    """Checks the FLAME layout and returns float32 / int arrays in facebot's npz layout."""
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


def convert_flame_pickle(src: str | Path, dst: str | Path, *, i_trust_this_file: bool = False,
                         overwrite: bool = False) -> dict[str, Any]:
    """Official FLAME pickle -> facebot ``.npz`` (see the module docstring). Returns a summary."""
    dst = Path(dst)
    if dst.suffix != ".npz":
        raise FlameModelError(f"{dst}: the output must be a .npz file")
    if dst.exists() and not overwrite:
        raise FlameModelError(f"{dst}: already exists (use --force to replace it)")
    arrays = _validated(read_flame_pickle(src, i_trust_this_file=i_trust_this_file), str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        np.savez(tmp, format=np.array(NPZ_FORMAT), **arrays)
    k = arrays["shapedirs"].shape[2]
    n_shape = int(arrays["n_shape"])
    return {
        "vertices": int(arrays["v_template"].shape[0]),
        "faces": int(arrays["f"].shape[0]),
        "shape_components": n_shape,
        "expression_components": k - n_shape,
        "path": str(dst),
    }


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------


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
        a = _validated(arrays, where, int(arrays["n_shape"]) if "n_shape" in arrays else None)
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


def _uv_sphere(centre, radii, n_lat: int, n_lon: int):
    """Vertices and outward-facing triangles of a latitude/longitude ellipsoid (no pole caps)."""
    lat = np.linspace(-math.pi / 2, math.pi / 2, n_lat + 2)[1:-1]
    lon = np.linspace(0.0, 2 * math.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(la) * np.sin(lo), np.sin(la), np.cos(la) * np.cos(lo)], axis=-1).reshape(-1, 3)
    verts = np.asarray(centre) + unit * np.asarray(radii)
    tris = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [(a, b, d), (a, d, c)]
    tris = np.asarray(tris, np.int64)
    # orient outwards: the normal must point away from the centre
    t = verts[tris]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    flip = np.einsum("ij,ij->i", n, t.mean(axis=1) - np.asarray(centre)) < 0
    tris[flip] = tris[flip][:, ::-1]
    return verts, tris


def synthetic_flame(n_lat: int = 24, n_lon: int = 32, eye_res: int = 8, seed: int = 0,
                    posedirs_scale: float = 1e-3) -> dict[str, np.ndarray]:
    """A small stand-in model in FLAME's layout (for tests and the benchmark; not a face).

    An ellipsoid head (skinned to the neck, its lower front part blended onto the jaw) and two
    eyeball spheres (skinned to the eye joints), with random shape / expression blendshapes and
    pose correctives. ``J_regressor`` is dense; each joint is the mean of a set of vertices.
    The defaults give ~830 vertices; ``n_lat=70, n_lon=72`` is about FLAME's size (5k / 10k).
    """
    rng = np.random.default_rng(seed)
    head_v, head_f = _uv_sphere((0.0, 0.0, 0.0), (0.075, 0.1, 0.09), n_lat, n_lon)
    parts_v, parts_f, offset = [head_v], [head_f], head_v.shape[0]
    eye_ids = []
    for x in (0.032, -0.032):  # left eye (joint 3) sits at +x, the viewer's right
        ev, ef = _uv_sphere((x, 0.022, 0.08), (0.012, 0.012, 0.012), eye_res, eye_res + 2)
        parts_v.append(ev)
        parts_f.append(ef + offset)
        eye_ids.append(np.arange(offset, offset + ev.shape[0]))
        offset += ev.shape[0]
    v = np.concatenate(parts_v)
    f = np.concatenate(parts_f)
    nv = v.shape[0]
    nh = head_v.shape[0]
    weights = np.zeros((nv, N_JOINTS))
    hy, hz = head_v[:, 1], head_v[:, 2]
    jaw_w = np.clip((-0.01 - hy) / 0.03, 0.0, 1.0) * np.clip(hz / 0.03, 0.0, 1.0)
    weights[:nh, 2] = jaw_w
    weights[:nh, 1] = 1.0 - jaw_w
    weights[eye_ids[0], 3] = 1.0
    weights[eye_ids[1], 4] = 1.0
    jreg = np.zeros((N_JOINTS, nv))
    jreg[0, :nh] = 1.0 / nh
    ring = np.argsort(np.abs(hy + 0.09))[: n_lon]  # a bottom ring -> neck joint on the axis
    jreg[1, ring] = 1.0 / ring.size
    jaw_ring = np.argsort(np.abs(hy + 0.02))[: n_lon]  # a ring at mouth height -> jaw joint
    jreg[2, jaw_ring] = 1.0 / jaw_ring.size
    jreg[3, eye_ids[0]] = 1.0 / eye_ids[0].size
    jreg[4, eye_ids[1]] = 1.0 / eye_ids[1].size

    def smooth_fields(k: int, scale: float) -> np.ndarray:  # [V, 3, k] low-frequency displacements
        freq = rng.normal(0.0, 25.0, (k, 3))
        phase = rng.uniform(0.0, 2 * math.pi, k)
        direction = rng.normal(0.0, scale, (k, 3))
        wave = np.cos(v @ freq.T + phase)  # [V, k]
        return wave[:, None, :] * direction.T[None, :, :]

    shapedirs = smooth_fields(N_SHAPE + 100, 1e-3)
    posedirs = smooth_fields(N_POSE_FEATURES, posedirs_scale) if posedirs_scale else np.zeros((nv, 3, N_POSE_FEATURES))
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": jreg,
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "f": f.astype(np.uint32),
    }


# ------------------------------------------------------------------------------------------
# Mesh rendering
# ------------------------------------------------------------------------------------------


class MeshRenderer:
    """Orthographic front view of the FLAME mesh, flat Lambert shading, painter's algorithm.

    Triangles are sorted back to front by mean depth and filled with ``cv2.fillConvexPoly``
    (sub-pixel vertex positions, ``shift=4``). Colours: skin for the head, and for triangles
    skinned mostly to an eye joint, sclera / iris / pupil by the angle from the eye's forward
    axis in the template (so the iris follows ``eye_pose``). Back faces (seen through the
    open mouth) are drawn in the mouth colour unless ``mesh.cull_backfaces``. The framing is
    fixed from the template's bounding box, so the head moves within a steady picture.
    """

    def __init__(self, model: FlameModel, config=None):
        from facebot.robot.display import FaceDisplayConfig

        self.model = model
        self.config = config if config is not None else FaceDisplayConfig()
        c = self.config
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
