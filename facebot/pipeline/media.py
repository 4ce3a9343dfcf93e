"""The face-display video of a session (H.264 + AAC in MP4, through PyAV).

The video shares robot.wav's timeline: frame i is what the display shows at t0 + i/25 s,
so that a person watching it sees the face move with the voice exactly as the robot would.
"""
from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from facebot.face.flame import FPS, FlameFrame


def grid_indices(stamps_ns: np.ndarray, t0_ns: int, count: int, fps: int = FPS) -> np.ndarray:
    """For each video frame time t0 + i/fps, the index of the newest FLAME frame stamped at or
    before it (-1: none yet)."""
    stamps = np.asarray(stamps_ns, np.int64)
    order = np.argsort(stamps, kind="stable")
    times = t0_ns + (np.arange(count, dtype=np.int64) * 1_000_000_000) // fps
    idx = np.searchsorted(stamps[order], times, side="right") - 1
    return np.where(idx >= 0, order[np.maximum(idx, 0)] if order.size else -1, -1)


def write_face_video(
    path: str | Path,
    frames: Iterable[FlameFrame | None],
    render: Callable[[FlameFrame], np.ndarray],
    audio: np.ndarray,
    sample_rate: int,
    fps: int = FPS,
    crf: int = 23,
) -> None:
    """Renders ``frames`` (one per video frame, None = neutral) and muxes them with ``audio``
    (which may be mapped from disk: it is read 40 ms at a time)."""
    import av

    neutral = FlameFrame.neutral()
    frames = (f if f is not None else neutral for f in frames)
    head = next(frames, None)  # None: no frames at all
    first = render(head or neutral)
    height, width = first.shape[:2]
    count = 0
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = width - width % 2, height - height % 2
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        per_frame = sample_rate // fps
        for i, frame in enumerate(itertools.chain([head] if head is not None else [], frames)):
            rgb = first if i == 0 else render(frame)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: video.height, : video.width]), format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for packet in video.encode(vf):
                container.mux(packet)
            # Interleave the audio of the same 40 ms so players can stream the file.
            _encode_audio(container, sound, audio[i * per_frame:(i + 1) * per_frame], i * per_frame, sample_rate)
            count = i + 1
        _encode_audio(container, sound, audio[count * per_frame:], count * per_frame, sample_rate)
        for stream in (video, sound):
            for packet in stream.encode():
                container.mux(packet)


def _encode_audio(container, stream, chunk: np.ndarray, start: int, sample_rate: int) -> None:
    import av

    if chunk.shape[0] == 0:
        return
    pcm = np.clip(np.nan_to_num(np.asarray(chunk, np.float32)), -1.0, 1.0)
    af = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout="mono")
    af.sample_rate = sample_rate
    af.pts = start
    af.time_base = Fraction(1, sample_rate)
    for packet in stream.encode(af):
        container.mux(packet)
