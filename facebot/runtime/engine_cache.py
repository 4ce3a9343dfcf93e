"""A folder of TensorRT engines, each keyed by everything that makes an engine wrong to reuse.

A TensorRT engine is only valid for the graph, weights and precision it was built from, the
TensorRT version that built it, the GPU it was tuned on and the builder options used. Isaac ROS
users expect what ``TensorRTNode`` does: reuse the engine file when nothing changed, rebuild it
(and say why) when something did, and rebuild on request (``force_engine_update``).

Layout of the folder::

    <graph>-<digest>.engine   the serialized engine
    <graph>-<digest>.json     its sidecar: the key's fields, the engine's size and blake2b
    timing-<trt>-<gpu>.cache  TensorRT's timing cache, shared by the graphs' builds

The digest is a hash of the whole key, so each key has its own file name; the sidecar is written
last, so an engine without one (an interrupted write) is never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

from facebot.io.atomic import atomic_write_bytes

__all__ = ["EngineKey", "EngineCache", "file_hash", "config_hash", "write_atomic"]

# what a field is called in a miss reason
_LABELS = {"onnx_hash": "ONNX graph", "weights_hash": "weights hash", "config_hash": "config",
           "precision": "precision", "trt_version": "TensorRT version", "gpu": "GPU",
           "options": "builder options"}


def file_hash(*paths: os.PathLike) -> str:
    """blake2b over the bytes of the given files in order (a graph and its external data)."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        h.update(b"\0")  # keeps ("ab", "c") apart from ("a", "bc")
    return h.hexdigest()


def config_hash(config: Any) -> str:
    """Stable hash of a JSON value (the manifest's config): key order does not matter."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """What an engine was built from and for. ``options`` are the builder settings that change
    the engine (workspace, optimization level...), given as a mapping or as pairs."""
    graph: str
    onnx_hash: str
    weights_hash: str
    config_hash: str
    precision: str
    trt_version: str
    gpu: str
    options: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self):
        # sorted pairs: hashable, and equal whatever order (or JSON round trip) they came in
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in pairs)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "EngineKey":
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        if missing:
            raise ValueError(f"engine key lacks {sorted(missing)}")
        return cls(**{k: d[k] for k in names})

    def digest(self) -> str:
        """Short hex of the whole key: the part of the file name that changes with the key."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def differences(self, other: "EngineKey") -> List[str]:
        """'<field> changed from X to Y' for every field in which ``other`` (an old key) differs."""
        out = []
        for name in _LABELS:
            old, new = getattr(other, name), getattr(self, name)
            if old != new:
                if name == "options":
                    old, new = dict(old), dict(new)
                elif name.endswith("_hash"):
                    old, new = str(old)[:12], str(new)[:12]
                out.append(f"{_LABELS[name]} changed from {old} to {new}")
        return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "unknown"


def write_atomic(path: Path, data) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over ``path``:
    a reader sees the old file or the whole new one, and a failure leaves no partial file."""
    atomic_write_bytes(path, data)


class EngineCache:
    """Engines in ``folder`` (created on first store), one entry per :class:`EngineKey`."""

    def __init__(self, folder: os.PathLike):
        self.folder = Path(folder)

    # ---- where things are --------------------------------------------------------------------
    def path_for(self, key: EngineKey) -> Path:
        return self.folder / f"{key.graph}-{key.digest()}.engine"

    def sidecar_for(self, key: EngineKey) -> Path:
        return self.path_for(key).with_suffix(".json")

    def timing_cache_path(self, trt_version: str, gpu: str) -> Path:
        """TensorRT's timing cache is only valid for one TensorRT version and one GPU."""
        return self.folder / f"timing-{_safe(trt_version)}-{_safe(gpu)}.cache"

    @staticmethod
    def _graph_of(path: Path) -> str:
        return path.stem.rsplit("-", 1)[0]  # the digest has no '-'; a graph name may

    # ---- reading -----------------------------------------------------------------------------
    def _record(self, key: EngineKey) -> Optional[dict]:
        try:
            rec = json.loads(self.sidecar_for(key).read_text())
            return rec if EngineKey.from_dict(rec["key"]) == key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _check(self, key: EngineKey, data: Optional[bytes] = None) -> Optional[str]:
        """Why the entry of ``key`` is not usable, or None when it is. Hashes the engine file
        (or ``data``, its bytes already read): a damaged engine must not reach TensorRT."""
        path = self.path_for(key)
        if not path.is_file():
            return "no engine built for these settings yet"
        rec = self._record(key)
        if rec is None:
            return f"{path.name} has no valid sidecar record (interrupted write?)"
        size = len(data) if data is not None else path.stat().st_size
        if size == 0 or size != rec.get("size"):
            return f"{path.name} is {size} bytes, its record says {rec.get('size')}"
        digest = (hashlib.blake2b(data, digest_size=16).hexdigest() if data is not None
                  else self._engine_hash(path))
        if digest != rec.get("blake2b"):
            return f"{path.name} is corrupted (content hash differs from its record)"
        return None

    @staticmethod
    def _engine_hash(path: Path) -> str:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()

    def lookup(self, key: EngineKey, force_engine_update: bool = False) -> Optional[Path]:
        """The engine file for exactly ``key`` if it is intact; None otherwise. With
        ``force_engine_update`` always None, and the entry of ``key`` is removed."""
        if force_engine_update:
            self.remove(key)
            return None
        return self.path_for(key) if self._check(key) is None else None

    def entries(self, graph: Optional[str] = None) -> List[Tuple[Path, Optional[EngineKey]]]:
        """(engine path, key or None when its sidecar is unreadable) of every entry."""
        out = []
        for engine in sorted(self.folder.glob("*.engine")):
            if graph is not None and self._graph_of(engine) != graph:
                continue
            try:
                key = EngineKey.from_dict(json.loads(engine.with_suffix(".json").read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                key = None
            out.append((engine, key))
        return out

    def stale_entries(self, key: EngineKey) -> List[Tuple[Path, EngineKey]]:
        """Entries of the same graph built for another key (newest first)."""
        found = [(p, k) for p, k in self.entries(key.graph) if k is not None and k != key]
        return sorted(found, key=lambda e: e[0].stat().st_mtime, reverse=True)

    def explain_miss(self, key: EngineKey, force_engine_update: bool = False) -> str:
        """One line saying why ``key`` has no usable engine ('' when it has one)."""
        if force_engine_update:
            return "rebuild forced (force_engine_update)"
        problem = self._check(key)
        if problem is None:
            return ""
        if self.path_for(key).is_file():
            return problem
        stale = self.stale_entries(key)
        if not stale:
            return f"no engine for graph {key.graph} yet"
        # the old entry closest to the current key says best what changed
        closest = min(stale, key=lambda e: len(key.differences(e[1])))[1]
        return "; ".join(key.differences(closest))

    # ---- writing -----------------------------------------------------------------------------
    def store(self, key: EngineKey, engine_bytes) -> Path:
        """Write the engine, then its sidecar, each atomically; returns the engine path."""
        data = memoryview(engine_bytes).cast("B")
        if data.nbytes == 0:
            raise ValueError(f"{key.graph}: refusing to store an empty engine")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        self.sidecar_for(key).unlink(missing_ok=True)  # no window where an old record vouches
        write_atomic(path, data)
        record = {"key": key.to_dict(), "size": data.nbytes,
                  "blake2b": hashlib.blake2b(data, digest_size=16).hexdigest(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_atomic(self.sidecar_for(key), json.dumps(record, indent=1).encode())
        return path

    def remove(self, key: EngineKey) -> None:
        self.sidecar_for(key).unlink(missing_ok=True)
        self.path_for(key).unlink(missing_ok=True)

    def invalidate(self, graph: Optional[str] = None) -> int:
        """Remove the entries of ``graph`` (all entries and leftover temporary files when None);
        returns how many files were removed. Timing caches stay: they are not engines."""
        removed = 0
        if not self.folder.is_dir():
            return 0
        patterns = ["*.engine", "*.json"] + (["*.tmp"] if graph is None else [])
        for pattern in patterns:
            for p in self.folder.glob(pattern):
                if graph is None or self._graph_of(p) == graph:
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    def prune_stale(self, key: EngineKey) -> List[Path]:
        """Remove the other entries of ``key``'s graph (engines are large); returns them."""
        gone = []
        for path, _ in self.stale_entries(key):
            path.with_suffix(".json").unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            gone.append(path)
        return gone

    def get_or_build(self, key: EngineKey, build_fn: Callable[[], Any],
                     force_engine_update: bool = False, log: Callable[[str], None] = print,
                     prune: bool = True) -> bytes:
        """The engine bytes for ``key``: read from the cache when intact, else ``build_fn()``
        (returns the serialized engine) is stored and returned. ``prune`` removes the graph's
        engines for other keys once the new one is stored."""
        if not force_engine_update:
            path = self.path_for(key)
            data = path.read_bytes() if path.is_file() else None
            if data is not None and self._check(key, data) is None:
                log(f"{key.graph}: engine from cache {path}")
                return data
        log(f"{key.graph}: building TensorRT engine ({self.explain_miss(key, force_engine_update)})")
        self.lookup(key, force_engine_update)  # forced: the old entry goes before the build
        t0 = time.perf_counter()
        data = bytes(memoryview(build_fn()).cast("B"))
        path = self.store(key, data)
        log(f"{key.graph}: built in {time.perf_counter() - t0:.1f} s, {len(data) / 1e6:.1f} MB -> {path}")
        if prune:
            for old in self.prune_stale(key):
                log(f"{key.graph}: removed stale engine {old.name}")
        return data
