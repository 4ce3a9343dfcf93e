"""PCM sample formats: bytes <-> float32 in [-1, 1], and channel mixing.

One place decides how every sample format maps to float, so a message, a WAV file and a
microphone buffer all mean the same thing. Integer scale is 2**(bits-1): -1.0 is the most
negative code and +1.0 clips to the most positive one; U8 is offset binary (128 = silence).
Non-finite samples are refused: a message that carries them is malformed.
"""
from __future__ import annotations

import numpy as np

# encoding name (msg/AudioChunk.msg ENCODING_*) -> little-endian sample dtype
ENCODING_DTYPES: dict[str, np.dtype] = {
    "S16LE": np.dtype("<i2"),
    "S32LE": np.dtype("<i4"),
    "F32LE": np.dtype("<f4"),
    "U8": np.dtype("u1"),
}
ENCODINGS = tuple(ENCODING_DTYPES)
# Sample rates facebot accepts anywhere (files, messages, raw formats): telephone 8 kHz with
# margin up to 384 kHz studio rates. A rate outside is a lying header: 1 Hz makes 96 KB of
# samples 13 hours long, 4294967295 Hz makes any resampler allocate without end.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000


def check_sample_rate(rate) -> int:
    """``rate`` as an int; ``ValueError`` naming it when outside the accepted range."""
    try:
        value = int(rate)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"sample rate {rate!r} is not a number") from None
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample rate {value} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return value


def sample_width(encoding: str) -> int:
    """Bytes per sample; ``ValueError`` for an unknown encoding."""
    return _dtype(encoding).itemsize


def _dtype(encoding: str) -> np.dtype:
    try:
        return ENCODING_DTYPES[encoding]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown audio encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})"
        ) from None


def encode(samples: np.ndarray, encoding: str) -> bytes:
    """float samples [frames] or [frames, channels] -> interleaved PCM bytes (clipped, never wrapped)."""
    dtype = _dtype(encoding)
    x = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("audio samples contain non-finite values")
    if encoding == "F32LE":
        q = np.clip(x, -1.0, 1.0).astype(dtype)
    elif encoding == "U8":
        q = np.clip(np.rint(x * 128.0) + 128.0, 0, 255).astype(dtype)
    else:
        scale = float(2 ** (dtype.itemsize * 8 - 1))
        q = np.clip(np.rint(x * scale), -scale, scale - 1).astype(dtype)
    return np.ascontiguousarray(q).tobytes()


def decode(data: bytes | bytearray | memoryview, encoding: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> float32 [frames, channels] in [-1, 1] (inverse of ``encode``)."""
    dtype = _dtype(encoding)
    if channels < 1:
        raise ValueError(f"channel count must be at least 1, got {channels}")
    width = dtype.itemsize
    if len(data) % (width * channels):
        raise ValueError(
            f"audio data length {len(data)} is not a multiple of channels*sample width "
            f"({channels}*{width})"
        )
    raw = np.frombuffer(bytes(data), dtype=dtype)
    if encoding == "F32LE":
        if not np.isfinite(raw).all():
            raise ValueError("F32LE audio data contains non-finite samples")
        x = np.clip(raw, -1.0, 1.0).astype(np.float32)
    elif encoding == "U8":
        x = ((raw.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    else:
        x = (raw.astype(np.float64) / float(2 ** (width * 8 - 1))).astype(np.float32)
    return x.reshape(-1, channels)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> [frames] float32 by averaging channels."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"audio must be [frames] or [frames, channels], got shape {list(x.shape)}")
    return x[:, 0].copy() if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
