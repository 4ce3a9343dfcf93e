"""A session's WAVs written as it runs: user.wav, robot.wav and conversation.wav.

robot.wav starts with the robot's lead (its first output is heard that long after the first
input was captured) and both mono files are padded with silence to the longer one, so that
conversation.wav (user left, robot right) pairs samples heard at the same time. Only the
samples one side is ahead of the other wait in memory; the rest goes straight to disk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from facebot.audio.framing import MODEL_RATE
from facebot.pipeline.plots import RunningEnvelope
from facebot.pipeline.spool import Spool


def pcm16_ready(samples: np.ndarray) -> np.ndarray:
    """What ``facebot.audio.files.write_wav`` stores: finite, clipped to [-1, 1]."""
    return np.clip(np.nan_to_num(np.asarray(samples, np.float32)), -1.0, 1.0)


class _Fifo:
    """Samples written to one side but not yet paired with the other's."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.count = 0

    def put(self, samples: np.ndarray) -> None:
        self.parts.append(samples)
        self.count += samples.shape[0]

    def take(self, n: int) -> np.ndarray:
        joined = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        self.parts = [joined[n:]] if joined.shape[0] > n else []
        self.count = joined.shape[0] - n
        return joined[:n]


class _Track:
    """One mono stream: its WAV, its envelope for the plot, and (for the video) its float samples."""

    def __init__(self, path: Path, envelope: RunningEnvelope, keep: Spool | None) -> None:
        self.wav = sf.SoundFile(str(path), "w", MODEL_RATE, 1, subtype="PCM_16")
        self.envelope = envelope
        self.keep = keep
        self.samples = 0
        self.unpaired = _Fifo()

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.wav.write(pcm16_ready(samples))
        self.envelope.push(samples)
        if self.keep is not None:
            self.keep.append(samples)
        self.unpaired.put(samples)
        self.samples += samples.shape[0]

    def close(self) -> None:
        self.wav.close()
        if self.keep is not None:
            self.keep.close()
        self.envelope.close()


class SessionAudio:
    """``scratch`` holds the envelopes (and, with ``keep_robot``, the robot's float samples for
    the video's sound track) until the session ends."""

    def __init__(self, folder: Path, scratch: Path, keep_robot: bool = False) -> None:
        self.user = _Track(folder / "user.wav", RunningEnvelope(MODEL_RATE, Spool(scratch / "user.envelope", np.float32)),
                           None)
        self.robot = _Track(folder / "robot.wav",
                            RunningEnvelope(MODEL_RATE, Spool(scratch / "robot.envelope", np.float32)),
                            Spool(scratch / "robot.pcm", np.float32) if keep_robot else None)
        self.conversation = sf.SoundFile(str(folder / "conversation.wav"), "w", MODEL_RATE, 2, subtype="PCM_16")

    def delay_robot(self, samples: int) -> None:
        """The robot's first output is heard ``samples`` after the user's first input."""
        self.robot.write(np.zeros(samples, np.float32))

    def add(self, user: np.ndarray, robot: np.ndarray) -> None:
        self.user.write(user)
        self.robot.write(robot)
        self._pair()

    def _pair(self) -> None:
        n = min(self.user.unpaired.count, self.robot.unpaired.count)
        if n:
            self.conversation.write(pcm16_ready(np.stack([self.user.unpaired.take(n), self.robot.unpaired.take(n)], axis=1)))

    def finish(self) -> int:
        """Pads both sides to the longer one and closes the files; returns the length in samples."""
        n = max(self.user.samples, self.robot.samples)
        for track in (self.user, self.robot):
            track.write(np.zeros(n - track.samples, np.float32))
        self._pair()
        self.close()
        return n

    def close(self) -> None:
        self.user.close()
        self.robot.close()
        self.conversation.close()
