"""facebot's ROS interfaces (msg/) without ROS: type store, message building and checking.

Only ``rosbags`` and ``numpy`` are used here: no rclpy, no ROS message packages. The message
definitions are read from the ``.msg`` files themselves, so the bag tools, the tests and the
nodes all agree with what ``rosidl_generate_interfaces`` builds.

Building messages: every ``*_to_msg`` / ``*_msg`` helper returns a rosbags message object by
default. Pass ``out=`` an existing message (an rclpy message, for instance) to fill that one
instead; fields are assigned in the container type the message already holds (numpy array,
``array.array``, ``bytes``, list), so the same helper serves the nodes and the bag tools.

Reading messages: ``flame_from_msg`` and ``audio_from_msg`` accept rosbags and rclpy messages
alike and raise ``ValueError`` with a one-line reason when a message is malformed.
"""
from __future__ import annotations

import array
import functools
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from facebot.face.flame import MAX_EXPRESSION, FlameFrame, FrameSource
from facebot.audio.pcm import ENCODING_DTYPES, check_sample_rate, sample_width
from facebot.audio.pcm import decode as decode_pcm
from facebot.audio.pcm import encode as encode_pcm

PACKAGE = "facebot"
MESSAGE_NAMES = ("FlameParams", "AudioChunk", "DialogueState")
FLAME_PARAMS = "facebot/msg/FlameParams"
AUDIO_CHUNK = "facebot/msg/AudioChunk"
DIALOGUE_STATE = "facebot/msg/DialogueState"

# AudioChunk encodings -> numpy little-endian sample dtype (msg/AudioChunk.msg ENCODING_*).
AUDIO_ENCODINGS = ENCODING_DTYPES
MAX_CHANNELS = 255  # uint8 channels
MAX_SAMPLE_RATE = 2**32 - 1  # uint32 sample_rate

# DialogueState.state values (msg/DialogueState.msg STATE_*).
STATE_IDLE, STATE_LISTENING, STATE_SPEAKING, STATE_OVERLAP = 0, 1, 2, 3
DIALOGUE_STATES = {STATE_IDLE: "idle", STATE_LISTENING: "listening",
                   STATE_SPEAKING: "speaking", STATE_OVERLAP: "overlap"}

_NS = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FLAME_FIXED = {"jaw_pose": 3, "neck_pose": 3, "eye_pose": 6, "eyelids": 2}


# --------------------------------------------------------------------------------------------
# Locating msg/ and building the type store


def msg_dir_candidates() -> list[Path]:
    """Where the ``.msg`` files may be, in search order.

    ``$FACEBOT_MSG_DIR`` (explicit override), then ``msg/`` in each of
    :func:`facebot.package_files.share_dirs` (checkout, ament index, pip install).
    """
    from facebot.package_files import share_dirs

    out: list[Path] = []
    if os.environ.get("FACEBOT_MSG_DIR"):
        out.append(Path(os.environ["FACEBOT_MSG_DIR"]))
    out.extend(root / "msg" for root in share_dirs())
    return out


def msg_dir() -> Path:
    """The first candidate directory that holds all of facebot's ``.msg`` files."""
    tried = msg_dir_candidates()
    for cand in tried:
        if all((cand / f"{name}.msg").is_file() for name in MESSAGE_NAMES):
            return cand
    raise FileNotFoundError(
        "facebot msg/ directory not found (looked for "
        + ", ".join(f"{n}.msg" for n in MESSAGE_NAMES)
        + " in: " + ", ".join(str(p) for p in tried) + ")"
    )


def msg_files() -> dict[str, Path]:
    """``{'facebot/msg/FlameParams': Path(...), ...}`` for every facebot message."""
    base = msg_dir()
    return {f"{PACKAGE}/msg/{name}": base / f"{name}.msg" for name in MESSAGE_NAMES}


@functools.lru_cache(maxsize=None)
def typestore() -> Typestore:
    """The ROS 2 Humble type store plus facebot's messages (built once, then cached).

    Humble's standard types (std_msgs, sensor_msgs, builtin_interfaces, ...) are identical in
    Jazzy for everything facebot uses.
    """
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for typename, path in msg_files().items():
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), typename))
    store.register(types)
    return store


def msg_class(typename: str) -> type:
    """The rosbags message class for a full type name, e.g. ``'facebot/msg/FlameParams'``."""
    try:
        return typestore().types[typename]
    except KeyError:
        raise KeyError(f"unknown message type {typename!r}") from None


def serialize(msg: Any, typename: str | None = None) -> bytes:
    """CDR bytes (little-endian) of a rosbags message; the type defaults to ``msg.__msgtype__``."""
    typename = typename or msg.__msgtype__
    return bytes(typestore().serialize_cdr(msg, typename, little_endian=True))


def deserialize(data: bytes | memoryview, typename: str) -> Any:
    """Inverse of :func:`serialize`."""
    return typestore().deserialize_cdr(data, typename)


# --------------------------------------------------------------------------------------------
# Time and headers


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds from a ``builtin_interfaces/Time`` (anything with ``sec`` and ``nanosec``)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < _NS:
        raise ValueError(f"stamp nanosec must be in [0, 1e9), got {nanosec}")
    return sec * _NS + nanosec


def _split_ns(ns: int) -> tuple[int, int]:
    if isinstance(ns, (float, np.floating)):
        if not math.isfinite(ns):
            raise ValueError(f"stamp must be finite, got {ns}")
        ns = round(ns)
    sec, nanosec = divmod(int(ns), _NS)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ValueError(f"stamp {ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return sec, nanosec


def ns_to_stamp(ns: int, out: Any = None) -> Any:
    """A ``builtin_interfaces/Time`` for ``ns`` (nanosec always in [0, 1e9), like rclpy).

    With ``out``, fills that Time object (e.g. ``msg.header.stamp`` of an rclpy message).
    """
    sec, nanosec = _split_ns(ns)
    if out is None:
        return msg_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)
    out.sec, out.nanosec = sec, nanosec
    return out


def make_header(stamp_ns: int, frame_id: str = "", out: Any = None) -> Any:
    """A ``std_msgs/Header``; with ``out``, fills that header in place."""
    if out is None:
        return msg_class("std_msgs/msg/Header")(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))
    ns_to_stamp(stamp_ns, out.stamp)
    out.frame_id = str(frame_id)
    return out


# --------------------------------------------------------------------------------------------
# Field helpers that work for rosbags and rclpy messages


def _assign(out: Any, name: str, values: np.ndarray) -> None:
    """Set a numeric array field in the container type ``out`` already uses."""
    cur = getattr(out, name, None)
    if isinstance(cur, array.array):
        value: Any = array.array(cur.typecode)
        value.frombytes(np.ascontiguousarray(values, dtype=np.dtype(cur.typecode)).tobytes())
    elif isinstance(cur, (bytes, bytearray)):
        value = np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    elif isinstance(cur, list):
        value = values.tolist()
    elif isinstance(cur, np.ndarray):
        value = np.array(values, dtype=cur.dtype)
    else:
        value = np.array(values)
    setattr(out, name, value)


def _float_field(msg: Any, name: str, size: int | None) -> np.ndarray:
    try:
        arr = np.asarray(getattr(msg, name), dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FlameParams.{name} is not a float array: {exc}") from None
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"FlameParams.{name} must have {size} values, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"FlameParams.{name} has non-finite values")
    return arr.copy()


def _bytes_of(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, array.array):
        if data.itemsize != 1:
            raise ValueError(f"AudioChunk.data must hold bytes, got array of typecode {data.typecode!r}")
        return data.tobytes()
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255):
            raise ValueError("AudioChunk.data must hold uint8 values")
        arr = arr.astype(np.uint8)
    return arr.tobytes()


# --------------------------------------------------------------------------------------------
# FlameParams


def flame_to_msg(frame: FlameFrame, frame_id: str = "face", out: Any = None) -> Any:
    """A ``facebot/msg/FlameParams`` for ``frame`` (header stamp = ``frame.stamp_ns``)."""
    if not frame.is_finite():
        raise ValueError("FLAME frame has non-finite values; refusing to publish it")
    n = frame.expression.shape[0]
    if not 1 <= n <= MAX_EXPRESSION:
        raise ValueError(f"FLAME expression must have 1..{MAX_EXPRESSION} values, got {n}")
    if not 0 <= int(frame.sequence) < 2**64:
        raise ValueError(f"FLAME sequence must fit uint64, got {frame.sequence}")
    arrays = {"expression": frame.expression,
              **{name: getattr(frame, name) for name in _FLAME_FIXED}}
    arrays = {k: np.asarray(v, dtype=np.float32).copy() for k, v in arrays.items()}
    if out is None:
        return msg_class(FLAME_PARAMS)(
            header=make_header(frame.stamp_ns, frame_id),
            sequence=int(frame.sequence),
            source=int(frame.source),
            **arrays,
        )
    make_header(frame.stamp_ns, frame_id, out.header)
    out.sequence = int(frame.sequence)
    out.source = int(frame.source)
    for name, values in arrays.items():
        _assign(out, name, values)
    return out


def flame_from_msg(msg: Any) -> FlameFrame:
    """The :class:`FlameFrame` in a FlameParams message; ``ValueError`` if it is malformed."""
    expression = _float_field(msg, "expression", None)
    if not 1 <= expression.shape[0] <= MAX_EXPRESSION:
        raise ValueError(
            f"FlameParams.expression must have 1..{MAX_EXPRESSION} values, got {expression.shape[0]}"
        )
    fixed = {name: _float_field(msg, name, size) for name, size in _FLAME_FIXED.items()}
    try:
        source = FrameSource(int(msg.source))
    except ValueError:
        raise ValueError(f"FlameParams.source {msg.source} is not one of the SOURCE_* constants") from None
    return FlameFrame(
        expression=expression,
        stamp_ns=stamp_to_ns(msg.header.stamp),
        sequence=int(msg.sequence),
        source=source,
        **fixed,
    )


# --------------------------------------------------------------------------------------------
# AudioChunk


def audio_to_msg(
    samples: np.ndarray,
    sample_rate: int,
    stamp_ns: int,
    encoding: str = "S16LE",
    frame_id: str = "audio",
    out: Any = None,
) -> Any:
    """A ``facebot/msg/AudioChunk`` from samples ``[n]`` (mono) or ``[n, channels]``.

    Float samples are taken as [-1, 1] and clipped. Integer samples of exactly the encoding's
    dtype (int16 for S16LE, int32 for S32LE, uint8 for U8) are copied verbatim; other integer
    types are first scaled to [-1, 1] by their own full scale.
    ``stamp_ns`` is the capture time (input) or intended playout time (output) of sample 0.
    """
    sample_width(encoding)
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"audio samples must be [n] or [n, channels], got shape {list(arr.shape)}")
    channels = arr.shape[1]
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"audio must have 1..{MAX_CHANNELS} channels, got {channels}")
    if isinstance(sample_rate, (float, np.floating)) and not float(sample_rate).is_integer():
        raise ValueError(f"sample_rate must be a whole number of Hz, got {sample_rate}")
    rate = int(sample_rate)
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be in 1..{MAX_SAMPLE_RATE}, got {sample_rate}")
    dtype = AUDIO_ENCODINGS[encoding]
    if arr.dtype.kind == dtype.kind and arr.dtype.itemsize == dtype.itemsize and dtype.kind in "iu":
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    elif arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        scaled = (arr.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
        data = encode_pcm(scaled, encoding)
    elif arr.dtype.kind in "fb":
        data = encode_pcm(arr, encoding)
    else:
        raise ValueError(f"audio samples must be numeric, got dtype {arr.dtype}")
    payload = np.frombuffer(data, dtype=np.uint8).copy()
    if out is None:
        return msg_class(AUDIO_CHUNK)(
            header=make_header(stamp_ns, frame_id),
            sample_rate=rate,
            channels=channels,
            encoding=encoding,
            data=payload,
        )
    make_header(stamp_ns, frame_id, out.header)
    out.sample_rate = rate
    out.channels = channels
    out.encoding = encoding
    _assign(out, "data", payload)
    return out


def audio_from_msg(msg: Any) -> tuple[np.ndarray, int]:
    """``(samples float32 [n, channels] in [-1, 1], sample_rate)``; ``ValueError`` if malformed."""
    encoding = str(msg.encoding)
    if encoding not in AUDIO_ENCODINGS:
        raise ValueError(
            f"AudioChunk.encoding {encoding!r} is not one of {', '.join(AUDIO_ENCODINGS)}"
        )
    channels = int(msg.channels)
    if channels <= 0:
        raise ValueError("AudioChunk.channels is 0")
    rate = check_sample_rate(msg.sample_rate)
    return decode_pcm(_bytes_of(msg.data), encoding, channels), rate


def audio_stamp_ns(msg: Any) -> int:
    """The header stamp of an AudioChunk (time of its first sample) in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


# --------------------------------------------------------------------------------------------
# DialogueState


def dialogue_state_msg(
    state: int,
    stamp_ns: int,
    *,
    user_speaking: bool = False,
    robot_speaking: bool = False,
    barge_in: bool = False,
    backchannel: bool = False,
    user_speech_prob: float = 0.0,
    text: str = "",
    step_latency_ms: float = 0.0,
    backend: str = "",
    frame_id: str = "",
    out: Any = None,
) -> Any:
    """A ``facebot/msg/DialogueState`` (``state`` is one of the STATE_* values)."""
    state = int(state)
    if state not in DIALOGUE_STATES:
        raise ValueError(f"dialogue state must be one of {sorted(DIALOGUE_STATES)}, got {state}")
    prob = float(user_speech_prob)
    if not 0.0 <= prob <= 1.0:  # also rejects NaN
        raise ValueError(f"user_speech_prob must be in [0, 1], got {user_speech_prob}")
    latency = float(step_latency_ms)
    if not math.isfinite(latency) or latency < 0:
        raise ValueError(f"step_latency_ms must be finite and >= 0, got {step_latency_ms}")
    fields = dict(
        state=state,
        user_speaking=bool(user_speaking),
        robot_speaking=bool(robot_speaking),
        barge_in=bool(barge_in),
        backchannel=bool(backchannel),
        user_speech_prob=prob,
        text=str(text),
        step_latency_ms=latency,
        backend=str(backend),
    )
    if out is None:
        return msg_class(DIALOGUE_STATE)(header=make_header(stamp_ns, frame_id), **fields)
    make_header(stamp_ns, frame_id, out.header)
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def dialogue_state_from_msg(msg: Any) -> SimpleNamespace:
    """The fields of a DialogueState as plain Python values plus ``stamp_ns``."""
    state = int(msg.state)
    if state not in DIALOGUE_STATES:
        raise ValueError(f"DialogueState.state {state} is not one of the STATE_* constants")
    return SimpleNamespace(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        state=state,
        user_speaking=bool(msg.user_speaking),
        robot_speaking=bool(msg.robot_speaking),
        barge_in=bool(msg.barge_in),
        backchannel=bool(msg.backchannel),
        user_speech_prob=float(msg.user_speech_prob),
        text=str(msg.text),
        step_latency_ms=float(msg.step_latency_ms),
        backend=str(msg.backend),
    )
