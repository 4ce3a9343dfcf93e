"""How late the robot's voice is really heard, from the audio player's feedback.

The dialogue publishes each output chunk and remembers when; the player republishes the
chunk on ``audio/played`` stamped with the time it was heard. Matching the two gives the lag
from publishing to hearing (network, queueing, the sound card's buffer), smoothed. The
playout delay used to stamp output is then at least that, so the face and the motors are
aligned to when the sound is actually heard, not to when it was made.
"""
from __future__ import annotations

import collections
import threading

FRAME_NS = 80_000_000


class PlayoutTracker:
    """Matches sent chunks to their ``played`` echo; gives the playout delay to stamp with."""

    def __init__(self, keep: int = 500, smoothing: float = 0.2) -> None:
        self._sent: collections.deque = collections.deque(maxlen=keep)  # (key, sent ns)
        self._lock = threading.Lock()
        self.smoothing = smoothing
        self.lag_ns: float | None = None
        self.unmatched = 0

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()
            self.lag_ns = None

    def sent(self, key, sent_ns: int) -> None:
        """Chunk ``key`` (e.g. a hash of its bytes) was published at ``sent_ns``."""
        with self._lock:
            self._sent.append((key, int(sent_ns)))

    def played(self, key, heard_ns: int) -> bool:
        """The player heard chunk ``key`` at ``heard_ns``; False if no sent chunk matches.

        Chunks sent before the match were lost or skipped by the player: dropped from the
        list, so a lost chunk never pairs with a later one.
        """
        with self._lock:
            while self._sent:
                sent_key, sent_ns = self._sent.popleft()
                if sent_key == key:
                    lag = heard_ns - sent_ns
                    self.lag_ns = lag if self.lag_ns is None else (
                        (1.0 - self.smoothing) * self.lag_ns + self.smoothing * lag)
                    return True
        self.unmatched += 1
        return False

    def delay_ns(self, base_ns: int, frame_stamp_ns: int, now_ns: int, measure: bool) -> int:
        """The playout delay for the output of the input frame captured at
        ``frame_stamp_ns``: ``base_ns`` (the configured least delay), or more when the
        measured lag shows its sound will be heard later than frame end + ``base_ns``."""
        delay = int(base_ns)
        if measure and self.lag_ns is not None:
            measured = now_ns + self.lag_ns - (frame_stamp_ns + FRAME_NS)
            delay = max(delay, int(measured))
        return delay
