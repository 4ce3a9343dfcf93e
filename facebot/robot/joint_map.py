"""FLAME frame -> unlimited joint position targets: the linear map of the head's configuration."""
from __future__ import annotations

import numpy as np

from facebot.face.flame import FlameFrame
from facebot.robot.head_config import FIELD_SIZES, FIELDS, HeadConfig

_FIELD_OFFSET: dict[str, int] = {}
_off = 0
for _name in FIELDS:
    _FIELD_OFFSET[_name] = _off
    _off += FIELD_SIZES[_name]
FEATURE_DIM = _off  # 114: every FLAME field concatenated, expression padded to MAX_EXPRESSION


def frame_features(frame: FlameFrame) -> np.ndarray:
    """All FLAME fields of a frame as one ``(FEATURE_DIM,)`` float64 vector (expression
    zero-padded to ``MAX_EXPRESSION``)."""
    out = np.zeros(FEATURE_DIM)
    for name in FIELDS:
        values = np.asarray(getattr(frame, name), np.float64).reshape(-1)[:FIELD_SIZES[name]]
        out[_FIELD_OFFSET[name]:_FIELD_OFFSET[name] + values.shape[0]] = values
    return out


def feature_index(field_name: str, index: int) -> int:
    return _FIELD_OFFSET[field_name] + index


def mapping_matrix(config: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(M [J, FEATURE_DIM], b [J])`` with ``targets = b + M @ frame_features(frame)``."""
    m = np.zeros((len(config.joints), FEATURE_DIM))
    b = np.zeros(len(config.joints))
    for i, j in enumerate(config.joints):
        b[i] = j.offset
        for t in j.expression:
            m[i, feature_index(t.field, t.index)] += j.gain * t.weight
    return m, b


def map_frame(config: HeadConfig, frame: FlameFrame) -> np.ndarray:
    """Unlimited joint position targets for one frame (no filter, no clamp)."""
    m, b = mapping_matrix(config)
    return b + m @ frame_features(frame)
