"""Live playback of the robot's voice, reporting when each frame will actually be heard.

The face and the motors follow the audio's playout time, not its generation time (an output
is stamped with when it is heard), so the sink returns the expected playout stamp of what it
was given.
"""
from __future__ import annotations

import time

import numpy as np

from facebot.audio.framing import MODEL_RATE
from facebot.pipeline.sources import SourceError


class SpeakerSink:
    """PortAudio output at 24 kHz mono; ``play`` blocks only when the device buffer is full."""

    def __init__(self, device: str | int | None = None, latency: str | float = "low") -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as err:
            raise SourceError(f"speaker: PortAudio is not available ({err})") from None
        try:
            self._stream = sd.OutputStream(device=device, samplerate=MODEL_RATE, channels=1,
                                           dtype="float32", latency=latency)
        except sd.PortAudioError as err:
            raise SourceError(f"speaker: cannot open output stream ({err})") from None
        self._stream.start()
        self.underflows = 0

    def expected_delay_ns(self, ready_stamp_ns: int) -> int:
        """How long after ``ready_stamp_ns`` audio written now will be heard.

        PortAudio's output latency covers the host buffer and the device, so a sample
        written now reaches the speaker about that much later.
        """
        return time.time_ns() + int(self._stream.latency * 1e9) - ready_stamp_ns

    def play(self, samples: np.ndarray) -> None:
        """Queues one frame; blocks only while the device buffer is full."""
        if self._stream.write(np.ascontiguousarray(samples, np.float32).reshape(-1, 1)):
            self.underflows += 1

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
