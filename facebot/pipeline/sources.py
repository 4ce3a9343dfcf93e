"""Where the user's audio and video come from: files (replayed as if captured) or devices.

Every source yields chunks with the capture time of their first sample, so that the loop
downstream cannot tell a file from a microphone except by the pace.
"""
from __future__ import annotations

import queue
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from facebot.audio.files import audio_blocks, scan_audio
from facebot.errors import FacebotError

NS_PER_S = 1_000_000_000


@dataclass
class AudioChunkIn:
    samples: np.ndarray  # [frames, channels] float32
    sample_rate: int
    stamp_ns: int  # capture time of samples[0]


class SourceError(FacebotError):
    """A source that cannot be opened; ``str()`` is a one-line reason."""


class FileAudioSource:
    """Replays a file in small chunks, stamped as if captured from ``t0_ns`` on.

    The file is checked whole when opened (a bad one is refused before the session starts) and
    then decoded a block at a time as it is replayed: an hours-long file is never held whole."""

    CHUNKS_PER_BLOCK = 50

    def __init__(self, path: str | Path, t0_ns: int, chunk_ms: float = 20.0) -> None:
        self.info = scan_audio(path)  # raises AudioFileError
        self.t0_ns = t0_ns
        self.chunk = max(1, int(round(self.info.sample_rate * chunk_ms / 1000.0)))

    @property
    def duration_s(self) -> float:
        return self.info.duration_s

    def __iter__(self) -> Iterator[AudioChunkIn]:
        rate = self.info.sample_rate
        start = 0
        for block in audio_blocks(self.info.path, self.chunk * self.CHUNKS_PER_BLOCK):
            for offset in range(0, block.shape[0], self.chunk):
                yield AudioChunkIn(block[offset:offset + self.chunk], rate,
                                   self.t0_ns + (start + offset) * NS_PER_S // rate)
            start += block.shape[0]


class MicrophoneSource:
    """Live capture through PortAudio (sounddevice); stamps come from the ADC clock."""

    def __init__(self, device: str | int | None = None, sample_rate: int | None = None,
                 channels: int = 1, chunk_ms: float = 20.0, duration_s: float | None = None) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as err:  # OSError: libportaudio missing
            raise SourceError(f"microphone: PortAudio is not available ({err})") from None
        self._sd = sd
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as err:
            raise SourceError(f"microphone: no input device {device!r} ({err})") from None
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.channels = channels
        self.blocksize = max(1, int(self.sample_rate * chunk_ms / 1000.0))
        self.device = device
        self.duration_s = duration_s
        self._queue: queue.Queue = queue.Queue(maxsize=500)
        self.overflows = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[AudioChunkIn]:
        sd = self._sd
        clock_offset_ns = [None]

        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                self.overflows += 1
            # Map PortAudio's stream clock to wall-clock time once, then follow the ADC clock.
            if clock_offset_ns[0] is None:
                clock_offset_ns[0] = time.time_ns() - int(time_info.currentTime * NS_PER_S)
            stamp = clock_offset_ns[0] + int(time_info.inputBufferAdcTime * NS_PER_S)
            try:
                self._queue.put_nowait(AudioChunkIn(indata.copy(), self.sample_rate, stamp))
            except queue.Full:
                self.dropped += 1

        try:
            stream = sd.InputStream(device=self.device, samplerate=self.sample_rate, channels=self.channels,
                                    blocksize=self.blocksize, dtype="float32", callback=callback)
        except sd.PortAudioError as err:
            raise SourceError(f"microphone: cannot open input stream ({err})") from None
        captured = 0  # samples delivered: --duration counts audio, not wall-clock time
        with stream:
            while self.duration_s is None or captured < self.duration_s * self.sample_rate:
                try:
                    chunk = self._queue.get(timeout=1.0)
                except queue.Empty:
                    raise SourceError("microphone: no audio for 1 s (device stopped?)") from None
                captured += chunk.samples.shape[0]
                yield chunk


class FrameTimeline:
    """Frames read in time order, served by time: the newest one stamped at or before ``t``."""

    def __init__(self, read) -> None:
        self._read = read  # () -> (rgb, stamp_ns) | None at the end
        self._current: tuple[np.ndarray, int] | None = None
        self._next: tuple[np.ndarray, int] | None = None
        self._ended = False

    def at(self, stamp_ns: int) -> tuple[np.ndarray, int] | None:
        while not self._ended:
            if self._next is None:
                self._next = self._read()
                if self._next is None:
                    self._ended = True
                    break
            if self._next[1] > stamp_ns:
                break
            self._current, self._next = self._next, None
        return self._current


class VideoSource:
    """Camera frames from a video file (by its own timeline) or a webcam (``webcam[:N]``)."""

    def __init__(self, spec: str, t0_ns: int) -> None:
        import cv2

        self._cv2 = cv2
        m = re.fullmatch(r"webcam(?::(\d+))?", spec)
        self.live = m is not None
        target = int(m.group(1) or 0) if m else spec
        if not self.live and not Path(spec).is_file():
            raise SourceError(f"{spec}: no such video file")
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            raise SourceError(f"{spec}: cannot open video")
        ok, frame = self._cap.read()
        if not ok:
            raise SourceError(f"{spec}: no frames could be decoded")
        self.t0_ns = t0_ns
        self.spec = spec
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self._first: tuple[np.ndarray, int] | None = (self._to_rgb(frame), t0_ns)
        self._latest: tuple[np.ndarray, int] | None = None
        self._timeline = FrameTimeline(self._read)
        self.frames_read = 1

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def _read(self) -> tuple[np.ndarray, int] | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        ok, frame = self._cap.read()
        if not ok:
            return None
        self.frames_read += 1
        if self.live:
            stamp = time.time_ns()
        else:
            stamp = self.t0_ns + int(self._cap.get(self._cv2.CAP_PROP_POS_MSEC) * 1e6)
        return self._to_rgb(frame), stamp

    def frame_at(self, stamp_ns: int) -> tuple[np.ndarray, int] | None:
        """The newest frame captured at or before ``stamp_ns`` (file) or the newest (webcam)."""
        if self.live:
            got = self._read()
            if got is not None:
                self._latest = got
            return self._latest
        return self._timeline.at(stamp_ns)

    def close(self) -> None:
        self._cap.release()


class Pacer:
    """Sleeps so that a file source is consumed in real time (``--realtime``)."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def wait_until(self, offset_s: float) -> None:
        delay = self._start + offset_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
