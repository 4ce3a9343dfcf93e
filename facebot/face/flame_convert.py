"""Safe conversion of the official FLAME model pickle to facebot's ``.npz``.

The official FLAME model (``generic_model.pkl``, ``flame2023.pkl``) is a Python pickle of a dict
holding numpy arrays, chumpy arrays and a scipy.sparse matrix. Unpickling a file can run any code
the file names, so facebot never unpickles implicitly:

* ``facebot flame-convert INPUT.pkl OUTPUT.npz --i-trust-this-file`` is the one command that
  reads a pickle. Even then it uses ``_RestrictedUnpickler``, which resolves only the names a
  FLAME file needs (numpy array / dtype reconstruction, ``copyreg._reconstructor``, ``set``),
  turns chumpy and scipy.sparse objects into inert stand-ins (their code never runs) and
  refuses anything else with a one-line error naming the offending global.
* It writes a plain ``.npz`` (no object arrays), checked by
  :func:`facebot.face.flame_mesh.flame_arrays`; that is the only file ``FlameModel.load`` reads.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from facebot.face.flame_mesh import FLAME_KEYS, NPZ_FORMAT, FlameModelError, flame_arrays
from facebot.io.atomic import atomic_path

__all__ = ["read_flame_pickle", "convert_flame_pickle"]


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


def convert_flame_pickle(src: str | Path, dst: str | Path, *, i_trust_this_file: bool = False,
                         overwrite: bool = False) -> dict[str, Any]:
    """Official FLAME pickle -> facebot ``.npz`` (checked by :func:`flame_arrays`). Returns a summary."""
    dst = Path(dst)
    if dst.suffix != ".npz":
        raise FlameModelError(f"{dst}: the output must be a .npz file")
    if dst.exists() and not overwrite:
        raise FlameModelError(f"{dst}: already exists (use --force to replace it)")
    arrays = flame_arrays(read_flame_pickle(src, i_trust_this_file=i_trust_this_file), str(src))
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
