"""FLAME face frames at 25 fps: the one face contract every part of facebot speaks.

A frame carries the FLAME expression coefficients plus the jaw, neck and eye rotations
(axis-angle, radians) and two eyelid closures. The 56-dim "core" vector
``[expression[:50], jaw_pose, neck_pose]`` is the DualTalk / TIMAR layout; DualTalk's
``.npz`` files store the same data as ``exp [T,50]`` and ``pose [T,6]`` (neck, then jaw).
Conversions to and from both are exact (float32 in, float32 out).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facebot.io.atomic import atomic_path

FPS = 25
FRAME_PERIOD_NS = 1_000_000_000 // FPS  # 40 ms
N_EXPRESSION = 50
MAX_EXPRESSION = 100
CORE_DIM = N_EXPRESSION + 3 + 3  # DualTalk / TIMAR layout

_FIELD_SIZES = {"jaw_pose": 3, "neck_pose": 3, "eye_pose": 6, "eyelids": 2}


class FrameSource(enum.IntEnum):
    """Where a frame came from; matches the SOURCE_* constants of msg/FlameParams.msg."""

    FILLER = 0  # nothing real was available (start-up, dropout, error): neutral or held pose
    PROCEDURAL = 1
    MODEL = 2
    PERCEIVED = 3  # estimated from a camera image of a person


def _vector(values, size: int | None, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"FLAME {name} must have {size} values, got {arr.shape[0]}")
    return arr


@dataclass
class FlameFrame:
    """One FLAME frame. ``stamp_ns`` is when it is meant to be shown; for the user's perceived
    face (an input), when it was captured."""

    expression: np.ndarray = field(default_factory=lambda: np.zeros(N_EXPRESSION, np.float32))
    jaw_pose: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    neck_pose: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    eye_pose: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    eyelids: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    stamp_ns: int = 0
    sequence: int = 0
    source: FrameSource = FrameSource.FILLER

    def __post_init__(self) -> None:
        self.expression = _vector(self.expression, None, "expression")
        if not 1 <= self.expression.shape[0] <= MAX_EXPRESSION:
            raise ValueError(
                f"FLAME expression must have 1..{MAX_EXPRESSION} values, "
                f"got {self.expression.shape[0]}"
            )
        for name, size in _FIELD_SIZES.items():
            setattr(self, name, _vector(getattr(self, name), size, name))
        self.source = FrameSource(self.source)

    @classmethod
    def neutral(cls, n_expression: int = N_EXPRESSION, **meta) -> "FlameFrame":
        return cls(expression=np.zeros(n_expression, np.float32), **meta)

    @property
    def is_filler(self) -> bool:
        return self.source == FrameSource.FILLER

    def is_finite(self) -> bool:
        return all(np.isfinite(getattr(self, n)).all() for n in ("expression", *_FIELD_SIZES))

    def to_core(self) -> np.ndarray:
        """The 56-dim DualTalk/TIMAR vector ``[exp[:50], jaw(3), neck(3)]``.

        Refuses frames with more than 50 expression terms unless the extra ones are zero,
        because the layout cannot hold them and a silent cut would not be lossless.
        """
        exp = self.expression
        if exp.shape[0] > N_EXPRESSION and np.any(exp[N_EXPRESSION:] != 0):
            raise ValueError(
                f"frame has {exp.shape[0]} expression terms with non-zero values past "
                f"{N_EXPRESSION}; the 56-dim layout cannot hold them"
            )
        core = np.zeros(CORE_DIM, np.float32)
        n = min(exp.shape[0], N_EXPRESSION)
        core[:n] = exp[:n]
        core[N_EXPRESSION:N_EXPRESSION + 3] = self.jaw_pose
        core[N_EXPRESSION + 3:] = self.neck_pose
        return core

    @classmethod
    def from_core(cls, core, **meta) -> "FlameFrame":
        core = _vector(core, CORE_DIM, "core vector")
        return cls(
            expression=core[:N_EXPRESSION].copy(),
            jaw_pose=core[N_EXPRESSION:N_EXPRESSION + 3].copy(),
            neck_pose=core[N_EXPRESSION + 3:].copy(),
            **meta,
        )


@dataclass
class FlameTrack:
    """A sequence of FLAME frames as stacked arrays: what is saved, trained on and evaluated."""

    expression: np.ndarray  # [T, E]
    jaw_pose: np.ndarray  # [T, 3]
    neck_pose: np.ndarray  # [T, 3]
    eye_pose: np.ndarray  # [T, 6]
    eyelids: np.ndarray  # [T, 2]
    stamp_ns: np.ndarray  # [T] int64
    sequence: np.ndarray  # [T] int64
    source: np.ndarray  # [T] uint8
    fps: int = FPS

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    @classmethod
    def from_frames(cls, frames: Sequence[FlameFrame], n_expression: int | None = None) -> "FlameTrack":
        if n_expression is None:
            n_expression = frames[0].expression.shape[0] if frames else N_EXPRESSION
        exp = np.zeros((len(frames), n_expression), np.float32)
        for i, f in enumerate(frames):
            if f.expression.shape[0] != n_expression:
                raise ValueError(
                    f"frame {i} has {f.expression.shape[0]} expression terms, track has {n_expression}"
                )
            exp[i] = f.expression

        def stack(name, size):
            return np.array([getattr(f, name) for f in frames], np.float32).reshape(len(frames), size)

        return cls(
            expression=exp,
            jaw_pose=stack("jaw_pose", 3),
            neck_pose=stack("neck_pose", 3),
            eye_pose=stack("eye_pose", 6),
            eyelids=stack("eyelids", 2),
            stamp_ns=np.array([f.stamp_ns for f in frames], np.int64),
            sequence=np.array([f.sequence for f in frames], np.int64),
            source=np.array([int(f.source) for f in frames], np.uint8),
        )

    def frames(self) -> Iterable[FlameFrame]:
        for i in range(len(self)):
            yield FlameFrame(
                expression=self.expression[i],
                jaw_pose=self.jaw_pose[i],
                neck_pose=self.neck_pose[i],
                eye_pose=self.eye_pose[i],
                eyelids=self.eyelids[i],
                stamp_ns=int(self.stamp_ns[i]),
                sequence=int(self.sequence[i]),
                source=FrameSource(int(self.source[i])),
            )

    def to_core(self) -> np.ndarray:
        """``[T, 56]`` in the DualTalk/TIMAR layout (see ``FlameFrame.to_core``)."""
        return np.stack([f.to_core() for f in self.frames()]) if len(self) else np.zeros((0, CORE_DIM), np.float32)

    @classmethod
    def from_core(cls, core: np.ndarray, fps: int = FPS, start_ns: int = 0) -> "FlameTrack":
        core = np.asarray(core, np.float32)
        if core.ndim != 2 or core.shape[1] != CORE_DIM:
            raise ValueError(f"core track must be [T, {CORE_DIM}], got {list(core.shape)}")
        return cls._from_parts(core[:, :N_EXPRESSION], core[:, N_EXPRESSION + 3:], core[:, N_EXPRESSION:N_EXPRESSION + 3], fps, start_ns)

    def to_dualtalk(self) -> dict[str, np.ndarray]:
        """DualTalk's per-speaker arrays: ``exp [T,50]`` and ``pose [T,6]`` (neck then jaw)."""
        core = self.to_core()
        pose = np.concatenate([core[:, N_EXPRESSION + 3:], core[:, N_EXPRESSION:N_EXPRESSION + 3]], axis=1)
        return {"exp": core[:, :N_EXPRESSION], "pose": pose}

    @classmethod
    def from_dualtalk(cls, exp: np.ndarray, pose: np.ndarray, fps: int = FPS, start_ns: int = 0) -> "FlameTrack":
        exp = np.asarray(exp, np.float32)
        pose = np.asarray(pose, np.float32)
        if exp.ndim != 2 or exp.shape[1] != N_EXPRESSION:
            raise ValueError(f"DualTalk exp must be [T, {N_EXPRESSION}], got {list(exp.shape)}")
        if pose.shape != (exp.shape[0], 6):
            raise ValueError(f"DualTalk pose must be [T, 6] matching exp, got {list(pose.shape)}")
        return cls._from_parts(exp, pose[:, :3], pose[:, 3:], fps, start_ns)

    @classmethod
    def _from_parts(cls, exp, neck, jaw, fps, start_ns) -> "FlameTrack":
        t = exp.shape[0]
        period = 1_000_000_000 // fps
        return cls(
            expression=exp.copy(),
            jaw_pose=jaw.copy(),
            neck_pose=neck.copy(),
            eye_pose=np.zeros((t, 6), np.float32),
            eyelids=np.zeros((t, 2), np.float32),
            stamp_ns=start_ns + np.arange(t, dtype=np.int64) * period,
            sequence=np.arange(t, dtype=np.int64),
            source=np.full(t, int(FrameSource.FILLER), np.uint8),
            fps=fps,
        )

    def save_npz(self, path: str | Path) -> None:
        """Writes every field, plus ``exp``/``pose`` in DualTalk's layout for other tools."""
        extra = self.to_dualtalk() if self.expression.shape[1] >= N_EXPRESSION else {}
        with atomic_path(path) as tmp:
            self._savez(tmp, extra)

    def _savez(self, path: Path, extra: dict) -> None:
        np.savez(
            path,
            expression=self.expression,
            jaw_pose=self.jaw_pose,
            neck_pose=self.neck_pose,
            eye_pose=self.eye_pose,
            eyelids=self.eyelids,
            stamp_ns=self.stamp_ns,
            sequence=self.sequence,
            source=self.source,
            fps=np.int64(self.fps),
            **extra,
        )

    @classmethod
    def load_npz(cls, path: str | Path) -> "FlameTrack":
        with np.load(path, allow_pickle=False) as data:
            if "expression" not in data:
                if "exp" in data and "pose" in data:
                    return cls.from_dualtalk(data["exp"], data["pose"])
                raise ValueError(f"{path}: not a FLAME track (no 'expression' or 'exp'/'pose' arrays)")
            return cls(
                expression=data["expression"],
                jaw_pose=data["jaw_pose"],
                neck_pose=data["neck_pose"],
                eye_pose=data["eye_pose"],
                eyelids=data["eyelids"],
                stamp_ns=data["stamp_ns"],
                sequence=data["sequence"],
                source=data["source"],
                fps=int(data["fps"]),
            )
