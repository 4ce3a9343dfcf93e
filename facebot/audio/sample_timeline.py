"""Audio on an absolute sample grid, placed by time stamp rather than by arrival order.

The echo canceller must pair each microphone sample with what the loudspeaker played at the
matching moment; both streams arrive in their own chunks and at their own pace, so both are
written where their stamps put them and read back by sample index.
"""
from __future__ import annotations

import numpy as np

from facebot.audio.framing import MODEL_RATE, NS_PER_S


def stamp_to_index(stamp_ns: int, rate: int = MODEL_RATE) -> int:
    """The absolute sample index (at ``rate``) of a time stamp."""
    return (int(stamp_ns) * rate) // NS_PER_S


class SampleTimeline:
    """A ring of audio on an absolute sample grid; remembers which samples were written."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, np.float32)
        self._index = np.full(self.capacity, -1, np.int64)  # absolute index held in each slot

    def write(self, start: int, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if n > self.capacity:
            start, samples, n = start + n - self.capacity, samples[-self.capacity:], self.capacity
        idx = np.arange(start, start + n, dtype=np.int64)
        pos = idx % self.capacity
        self._data[pos] = samples
        self._index[pos] = idx

    def read(self, start: int, n: int) -> tuple[np.ndarray, int]:
        """``n`` samples from ``start`` (zeros where nothing was written) and how many were."""
        idx = np.arange(start, start + n, dtype=np.int64)
        pos = idx % self.capacity
        held = self._index[pos] == idx
        return np.where(held, self._data[pos], 0.0).astype(np.float32), int(held.sum())
