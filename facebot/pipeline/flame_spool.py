"""A session's FLAME track, field by field on disk: flame.npz, the plot and the video read it back.

The saved ``flame.npz`` holds what ``FlameTrack.from_frames(frames).save_npz(...)`` writes
(every field, ``fps``, and ``exp``/``pose`` in DualTalk's layout), assembled from the spools
without loading them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from facebot.face.flame import CORE_DIM, FPS, N_EXPRESSION, FlameFrame, FrameSource
from facebot.pipeline.spool import Spool, save_npz

_POSE_FIELDS = {"jaw_pose": 3, "neck_pose": 3, "eye_pose": 6, "eyelids": 2}


class FlameSpool:
    """Appends FLAME frames to per-field spools under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fields: dict[str, Spool] | None = None  # opened by the first frame (its expression size)

    def __len__(self) -> int:
        return 0 if self._fields is None else self._fields["stamp_ns"].count

    def append(self, frames: Iterable[FlameFrame]) -> None:
        for f in frames:
            fields = self._fields or self._open(f.expression.shape[0])
            if f.expression.shape[0] != fields["expression"].row_shape[0]:
                raise ValueError(f"frame {len(self)} has {f.expression.shape[0]} expression terms, "
                                 f"track has {fields['expression'].row_shape[0]}")
            fields["expression"].append(f.expression)
            for name in _POSE_FIELDS:
                fields[name].append(getattr(f, name))
            fields["stamp_ns"].append(f.stamp_ns)
            fields["sequence"].append(f.sequence)
            fields["source"].append(int(f.source))
            if "exp" in fields:  # DualTalk's layout: exp [50], pose = neck then jaw
                core = f.to_core()
                fields["exp"].append(core[:N_EXPRESSION])
                fields["pose"].append(np.concatenate([core[N_EXPRESSION + 3:], core[N_EXPRESSION:N_EXPRESSION + 3]]))

    def _open(self, n_expression: int) -> dict[str, Spool]:
        spec = {"expression": (np.float32, (n_expression,)),
                **{name: (np.float32, (size,)) for name, size in _POSE_FIELDS.items()},
                "stamp_ns": (np.int64, ()), "sequence": (np.int64, ()), "source": (np.uint8, ())}
        if n_expression >= N_EXPRESSION:
            spec.update(exp=(np.float32, (N_EXPRESSION,)), pose=(np.float32, (CORE_DIM - N_EXPRESSION,)))
        self._fields = {name: Spool(self.folder / f"flame.{name}", dtype, shape)
                        for name, (dtype, shape) in spec.items()}
        return self._fields

    def field(self, name: str) -> np.ndarray:
        """One field, loaded (``[T, ...]``; for the small ones: stamps, poses)."""
        return (self._fields or self._open(N_EXPRESSION))[name].read()

    def save_npz(self, path: Path) -> None:
        fields = self._fields or self._open(N_EXPRESSION)
        arrays = {name: fields[name] for name in ("expression", *_POSE_FIELDS, "stamp_ns", "sequence", "source")}
        arrays["fps"] = np.int64(FPS)
        arrays.update({name: fields[name] for name in ("exp", "pose") if name in fields})
        save_npz(path, arrays)

    def frames_at(self, indices: np.ndarray) -> Iterator[FlameFrame | None]:
        """The frames at ``indices`` (-1: None), read from disk one at a time."""
        fields = self._fields or self._open(N_EXPRESSION)
        for i in indices:
            if i < 0:
                yield None
                continue
            row = {name: fields[name][i:i + 1][0] for name in ("expression", *_POSE_FIELDS, "stamp_ns", "sequence", "source")}
            yield FlameFrame(expression=row["expression"], **{name: row[name] for name in _POSE_FIELDS},
                             stamp_ns=int(row["stamp_ns"]), sequence=int(row["sequence"]),
                             source=FrameSource(int(row["source"])))

    def close(self) -> None:
        for spool in (self._fields or {}).values():
            spool.close()
