"""Start from an export folder alone: check that it holds the model asked for without building
that model.

At export the manifest records, beside the hash of every parameter, where each part's weights
came from (``weight_sources``): a weight file's path, size, modification time and blake2b, or
the seed of random weights. A start from the folder compares the files it is given against
that record: same size and mtime -> trusted (the stored hash stands for the bytes, nothing is
read); size differs -> differs; mtime differs (a copy, a touch) -> the file is re-hashed once and
compared. ``verify=True`` re-hashes every file. The rest of what the graphs depend on (LM and
codec config, precision, sampling widths, face model or not, facebot version) is compared key
by key, and a mismatch names the key and both values.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from ..runtime.engine_cache import file_hash
from .onnx_export import ManifestError, read_manifest, write_manifest

__all__ = ["file_fingerprint", "weight_sources", "source_differences", "open_export",
           "record_sources", "identity_differences"]

# the parts of a model whose weights the manifest traces back to files (or to a seed)
PARTS = ("lm", "mimi", "face_lm", "face_codec")


def file_fingerprint(path: os.PathLike, known: Optional[Mapping] = None) -> dict:
    """path (absolute), size, mtime_ns and blake2b of a weight file; the hash of ``known`` (an
    earlier fingerprint) is reused when path, size and mtime are unchanged."""
    p = Path(path).resolve()
    st = p.stat()
    fp = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if known and all(known.get(k) == fp[k] for k in ("path", "size", "mtime_ns")) and known.get("blake2b"):
        return {**fp, "blake2b": known["blake2b"]}
    return {**fp, "blake2b": file_hash(p)}


def weight_sources(files: Mapping[str, Optional[os.PathLike]], init_seed: int,
                   known: Optional[Mapping] = None) -> dict:
    """Per part (lm, mimi, face_lm, face_codec): the file's fingerprint, or ``{"random_seed": s}``
    for random weights. Parts absent from ``files`` are not part of the model (no face)."""
    known = known or {}
    return {part: (file_fingerprint(f, known.get(part)) if f is not None else {"random_seed": int(init_seed)})
            for part, f in files.items()}


def _describe(src: Optional[Mapping]) -> str:
    if src is None:
        return "none"
    if "random_seed" in src:
        return f"random weights (seed {src['random_seed']})"
    return f"{src['path']} ({src['size']} bytes, blake2b {str(src.get('blake2b'))[:12]})"


def source_differences(recorded: Mapping, requested: Mapping[str, Optional[os.PathLike]], init_seed: int,
                       verify: bool = False, log: Callable[[str], None] = lambda m: None) -> List[str]:
    """What differs between the weights recorded at export and the files given now (one line
    per part; empty when they match). Reads a file only when its size matches and its mtime
    does not, or with ``verify``."""
    out = []
    for part in sorted(set(recorded) | set(requested)):
        rec = recorded.get(part)
        if part not in requested:
            out.append(f"{part} weights: folder has {_describe(rec)}, none requested")
            continue
        f = requested[part]
        if f is None:
            want = {"random_seed": int(init_seed)}
            if rec != want:
                out.append(f"{part} weights: folder made from {_describe(rec)}, requested {_describe(want)}")
            continue
        p = Path(f).resolve()
        if rec is None or "blake2b" not in rec:
            out.append(f"{part} weights: folder made from {_describe(rec)}, requested {p}")
            continue
        st = p.stat()
        if st.st_size != rec["size"]:
            out.append(f"{part} weights: {p} is {st.st_size} bytes, the folder was made from "
                       f"{rec['path']} ({rec['size']} bytes)")
            continue
        if not verify and st.st_mtime_ns == rec["mtime_ns"]:
            continue  # same size and mtime: the stored hash stands for the bytes
        log(f"{part} weights: hashing {p} ({'verify' if verify else 'modification time differs'})")
        digest = file_hash(p)
        if digest != rec["blake2b"]:
            out.append(f"{part} weights: {p} (blake2b {digest[:12]}) differs from {rec['path']} "
                       f"(blake2b {rec['blake2b'][:12]}) that the folder was made from")
    return out


def identity_differences(manifest: Mapping, expect: Mapping) -> List[str]:
    """'key: folder has X, requested Y' for every expected key that differs (dicts: per sub-key)."""
    out = []
    for key, want in expect.items():
        have = manifest.get(key)
        if have == want:
            continue
        if isinstance(have, dict) and isinstance(want, dict):
            for sub in sorted(set(have) | set(want)):
                if have.get(sub) != want.get(sub):
                    out.append(f"{key}.{sub}: folder has {have.get(sub)!r}, requested {want.get(sub)!r}")
        else:
            out.append(f"{key}: folder has {have!r}, requested {want!r}")
    return out


def open_export(folder: os.PathLike, expect: Mapping, files: Mapping[str, Optional[os.PathLike]],
                init_seed: int, verify: bool = False, log: Callable[[str], None] = lambda m: None) -> dict:
    """The manifest of ``folder`` if it holds the model asked for (``expect``: the identity keys
    but the parameter hash; ``files``: the weight file of each part, None for random weights);
    else :class:`ManifestError` listing every difference."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    diffs = identity_differences(manifest, expect)
    recorded = manifest.get("weight_sources")
    if recorded is None:
        diffs.append("the folder records no weight files: "
                     "re-export it with `facebot export`")
    else:
        diffs += source_differences(recorded, files, init_seed, verify, log)
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise ManifestError(f"{folder} does not hold the model asked for: {'; '.join(diffs[:3])}{more}")
    return manifest


def record_sources(folder: os.PathLike, manifest: dict, sources: Mapping) -> dict:
    """Write ``sources`` into the folder's manifest (atomically) when they differ from what it
    records: a folder reused for the same parameters learns where they now come from."""
    if manifest.get("weight_sources") == dict(sources):
        return manifest
    manifest = {**manifest, "weight_sources": dict(sources)}
    write_manifest(Path(folder), manifest)
    return manifest


def recorded_sources(folder: Optional[os.PathLike]) -> Dict[str, dict]:
    """The weight sources a folder's manifest records ({} when there is none): their hashes
    spare a re-hash of unchanged files."""
    if folder is None:
        return {}
    try:
        return dict(read_manifest(Path(folder)).get("weight_sources") or {})
    except ManifestError:
        return {}
