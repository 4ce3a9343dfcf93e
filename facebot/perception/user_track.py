"""The user's perceived face on the model's clock: two FLAME frames per 80 ms step, or none.

Perceived frames arrive at the camera's rate, stamped with their images' capture times; the
model wants the user's face at the times of its audio frame (``capture_stamp`` and +40 ms).
``frames_for(t0)`` gives, for each of the two times, the newest perceived frame captured at
or before it (sample and hold: causal, never a frame from the future), and ``None`` when that
frame is older than ``max_age_s`` or there is none: no face in view. Frames are re-stamped to
the requested times and keep source PERCEIVED.

It also holds where the user is (the face position in the camera's optical frame, for the
robot's gaze) with the same age rule.
"""
from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import deque

import numpy as np

from facebot.face.flame import FRAME_PERIOD_NS, FlameFrame


class UserFaceTrack:
    def __init__(self, max_age_s: float = 0.3, keep: int = 64) -> None:
        if not 0.0 < max_age_s <= 10.0:
            raise ValueError(f"max_age_s must be in (0, 10], got {max_age_s}")
        self.max_age_ns = int(max_age_s * 1e9)
        self._frames: deque = deque(maxlen=keep)  # (stamp, frame), increasing stamps
        self._positions: deque = deque(maxlen=keep)  # (stamp, xyz optical)
        self.out_of_order = 0
        self._lock = threading.Lock()  # frames may arrive on another thread than the step's

    def reset(self) -> None:
        with self._lock:
            self._frames.clear()
            self._positions.clear()

    def _push(self, buf: deque, stamp: int, value) -> bool:
        with self._lock:
            if buf and stamp < buf[-1][0]:
                return False
            buf.append((int(stamp), value))
            return True

    def add(self, frame: FlameFrame, position=None) -> None:
        """One perceived frame (its stamp = its image's capture time); late ones are counted
        and dropped, so the track stays causal."""
        if not frame.is_finite() or not self._push(self._frames, frame.stamp_ns, frame):
            self.out_of_order += 1
            return
        if position is not None:
            self.add_position(frame.stamp_ns, position)

    def add_position(self, stamp_ns: int, position) -> None:
        p = np.asarray(position, np.float64).reshape(3)
        if np.isfinite(p).all() and p[2] > 0:
            self._push(self._positions, stamp_ns, p)

    def _at(self, buf: deque, t: int):
        with self._lock:
            items = list(buf)
        i = bisect.bisect_right([s for s, _ in items], t) - 1
        if i < 0 or t - items[i][0] > self.max_age_ns:
            return None
        return items[i][1]

    def frames_for(self, t0_ns: int) -> list[FlameFrame] | None:
        """The two frames of the step starting at ``t0_ns``; None unless both have a face."""
        out = []
        for j in range(2):
            t = t0_ns + j * FRAME_PERIOD_NS
            f = self._at(self._frames, t)
            if f is None:
                return None
            out.append(dataclasses.replace(f, stamp_ns=t))
        return out

    def position_at(self, t_ns: int) -> np.ndarray | None:
        return self._at(self._positions, t_ns)
