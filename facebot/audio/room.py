"""A simulated robot head in a room: the loudspeaker's voice comes back into the microphone.

``facebot run --echo-room`` closes the loop as on a robot with an open loudspeaker: every
output frame is played (at its playout stamp plus a hardware delay the software does not
know), through a small loudspeaker (a band limit and a soft clip), into a room simulated by
pyroomacoustics (image sources: the head's speaker and microphone a few centimetres apart,
the user a metre or so away, reverberation), and arrives at the microphone mixed with the
user's side and background noise. An echo can only reach input frames captured after it was
played, so what the robot says at step k changes what it hears at later steps.

Everything random (room size, absorption, positions, delay, noise) comes from ``seed``.
The room keeps the echo and the user's parts of each microphone frame apart, so that a
session can measure what the canceller achieved.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebot.audio.framing import MODEL_RATE
from facebot.audio.sample_timeline import SampleTimeline, stamp_to_index
from facebot.errors import FacebotError


@dataclass
class EchoRoomConfig:
    seed: int = 0
    # Time from an output's playout stamp to the sound leaving the speaker (driver and DAC
    # latency nobody reported); None = drawn from [30, 150] ms by the seed.
    delay_ms: float | None = None
    echo_gain_db: float = 0.0  # speaker's direct sound at the microphone vs the robot's level
    user_gain_db: float = -6.0  # the user's direct sound at the microphone vs the input file
    rt60_s: float | None = None  # None = drawn from [0.25, 0.6] s
    distortion: float = 0.3  # loudspeaker soft clipping: 0 = linear
    noise_dbfs: float = -60.0  # background noise (RMS)
    rir_max_s: float = 0.6  # impulse responses are cut here

    def __post_init__(self) -> None:
        if self.delay_ms is not None and not 0.0 <= self.delay_ms <= 2000.0:
            raise ValueError(f"echo room: delay_ms must be within [0, 2000], got {self.delay_ms}")
        if self.rt60_s is not None and not 0.1 <= self.rt60_s <= 2.0:
            raise ValueError(f"echo room: rt60_s must be within [0.1, 2], got {self.rt60_s}")
        if not 0.0 <= self.distortion <= 1.0:
            raise ValueError("echo room: distortion must be within [0, 1]")


class RoomUnavailable(FacebotError, RuntimeError):
    """pyroomacoustics is not installed (the simulated room only; a robot never needs it)."""


def _require_pyroomacoustics():
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise RoomUnavailable("the simulated room needs pyroomacoustics (pip install pyroomacoustics)") from None
    return pra


class EchoRoom:
    """``play`` what the robot says (by playout stamp); ``capture`` the microphone frame."""

    def __init__(self, config: EchoRoomConfig | None = None, rate: int = MODEL_RATE) -> None:
        from scipy.signal import butter

        self.config = c = config or EchoRoomConfig()
        self.rate = rate
        rng = np.random.default_rng(c.seed)
        self.delay_ms = float(c.delay_ms if c.delay_ms is not None else rng.uniform(30.0, 150.0))
        self.rt60_s = float(c.rt60_s if c.rt60_s is not None else rng.uniform(0.25, 0.6))
        self.speaker_rir, self.user_rir, self.layout = self._impulse_responses(rng)
        # What a delay estimator should find: the hardware delay plus the direct path.
        self.echo_delay_ms = self.delay_ms + 1000.0 * self.layout["speaker_to_mic_m"] / 343.0
        # A small loudspeaker: little below 250 Hz, soft clipping at high drive.
        self._speaker_sos = butter(2, 250.0, "highpass", fs=rate, output="sos")
        self._speaker_zi = np.zeros((self._speaker_sos.shape[0], 2))
        self._noise_sos = butter(1, 800.0, "lowpass", fs=rate, output="sos")  # a room's rumble
        self._noise_zi = np.zeros((self._noise_sos.shape[0], 2))
        self._noise_rng = np.random.default_rng(rng.integers(2 ** 32))
        self._noise_gain = None
        self._echo = SampleTimeline(int(10 * rate))  # echo arriving at the mic, by sample
        self._user_tail = np.zeros(0, np.float32)
        self.last_echo = np.zeros(0, np.float32)  # the parts of the last captured frame
        self.last_user = np.zeros(0, np.float32)
        self.clipped_samples = 0

    def _impulse_responses(self, rng):
        pra = _require_pyroomacoustics()
        dims = np.array([rng.uniform(3.5, 6.0), rng.uniform(3.0, 5.0), rng.uniform(2.5, 3.0)])
        head = np.array([rng.uniform(1.2, dims[0] - 1.2), rng.uniform(1.2, dims[1] - 1.2), rng.uniform(1.1, 1.5)])
        facing = rng.uniform(0, 2 * np.pi)
        ahead = np.array([np.cos(facing), np.sin(facing), 0.0])
        mic = head + 0.06 * ahead + np.array([0, 0, 0.05])  # on the forehead
        speaker = head + 0.05 * ahead - np.array([0, 0, 0.04])  # at the mouth, ~9 cm away
        user = head + rng.uniform(1.0, 1.6) * ahead
        user[2] = rng.uniform(1.4, 1.7)
        user = np.clip(user, 0.3, dims - 0.3)
        absorption, max_order = pra.inverse_sabine(self.rt60_s, dims)
        room = pra.ShoeBox(dims, fs=self.rate, materials=pra.Material(absorption),
                           max_order=min(max_order, 20))
        room.add_source(speaker)
        room.add_source(user)
        room.add_microphone(mic)
        room.compute_rir()
        cut = int(self.config.rir_max_s * self.rate)
        rirs = []
        for s, gain_db, pos in ((0, self.config.echo_gain_db, speaker), (1, self.config.user_gain_db, user)):
            h = np.asarray(room.rir[0][s], np.float64)[:cut]
            # pyroomacoustics delays the impulse by its fractional-delay filter's half length:
            # keep the acoustic path only, normalised so the direct sound has the given gain.
            direct = int(np.argmax(np.abs(h)))
            travel = int(round(np.linalg.norm(pos - mic) / 343.0 * self.rate))
            h = h[max(0, direct - travel):]
            h *= 10 ** (gain_db / 20.0) / np.abs(h).max()
            rirs.append(h.astype(np.float32))
        layout = {"room_m": dims.round(2).tolist(), "rt60_s": round(self.rt60_s, 3),
                  "speaker_to_mic_m": round(float(np.linalg.norm(speaker - mic)), 3),
                  "user_to_mic_m": round(float(np.linalg.norm(user - mic)), 3)}
        return rirs[0], rirs[1], layout

    def describe(self) -> dict:
        return {**self.layout, "hardware_delay_ms": round(self.delay_ms, 2), "seed": self.config.seed,
                "echo_gain_db": self.config.echo_gain_db, "distortion": self.config.distortion,
                "noise_dbfs": self.config.noise_dbfs}

    def _loudspeaker(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import sosfilt

        y, self._speaker_zi = sosfilt(self._speaker_sos, np.asarray(x, np.float64), zi=self._speaker_zi)
        d = self.config.distortion
        if d > 0:
            drive = 1.0 + 3.0 * d
            y = np.tanh(drive * y) / drive * (1.0 + 0.5 * d)  # compresses peaks, keeps soft parts
        return y

    def play(self, samples: np.ndarray, stamp_ns: int) -> None:
        """The robot's output, meant to be heard from ``stamp_ns`` (its playout stamp)."""
        from scipy.signal import oaconvolve

        x = self._loudspeaker(np.asarray(samples, np.float32))
        if not np.any(x):
            return
        start = stamp_to_index(stamp_ns, self.rate) + int(round(self.delay_ms * self.rate / 1000.0))
        echo = oaconvolve(x, self.speaker_rir)
        have, _ = self._echo.read(start, echo.shape[0])
        self._echo.write(start, (have + echo).astype(np.float32))

    def capture(self, user: np.ndarray, stamp_ns: int) -> np.ndarray:
        """The microphone frame: the user's side (through the room) + echo + noise, clipped
        like an ADC. ``last_user`` / ``last_echo`` hold the parts."""
        from scipy.signal import oaconvolve, sosfilt

        u = np.asarray(user, np.float32)
        n = u.shape[0]
        wet = oaconvolve(u, self.user_rir).astype(np.float32)
        wet[: self._user_tail.shape[0]] += self._user_tail  # the reverberation of earlier frames
        self._user_tail = wet[n:]
        user_part = wet[:n]
        echo_part, _ = self._echo.read(stamp_to_index(stamp_ns, self.rate), n)
        noise, self._noise_zi = sosfilt(self._noise_sos, self._noise_rng.standard_normal(n), zi=self._noise_zi)
        if self._noise_gain is None:
            probe = sosfilt(self._noise_sos, np.random.default_rng(0).standard_normal(self.rate))
            self._noise_gain = 10 ** (self.config.noise_dbfs / 20.0) / float(np.sqrt(np.mean(probe ** 2)))
        mic = user_part + echo_part + (noise * self._noise_gain).astype(np.float32)
        self.clipped_samples += int(np.sum(np.abs(mic) > 1.0))
        self.last_user, self.last_echo = user_part, echo_part
        return np.clip(mic, -1.0, 1.0).astype(np.float32)
