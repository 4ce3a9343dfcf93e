"""Streaming voice activity detection: silero-vad's ONNX model plus a hysteresis tracker.

``SileroVad`` turns 24 kHz audio, in chunks of any length, into one speech probability per
32 ms of audio. ``VoiceActivity`` turns those probabilities into onset/offset events.

Why these choices:

* Model rate 8 kHz (default). silero-vad's ``silero_vad.onnx`` accepts 8 and 16 kHz with the
  same 32 ms window (256 or 512 samples). 24 kHz -> 8 kHz is an integer decimation by 3, so
  a short causal FIR and a phase counter suffice: no resampler buffering, 1 ms of delay. Speech
  energy that decides "is someone talking" lies well below 4 kHz. 16 kHz (up 2, down 3, same
  filter machinery) is available with ``model_rate=16000`` when the extra band is worth it:
  the duplex loop uses it, because a user a metre or more from the robot's microphone comes
  with a room's reverberation, and there the 8 kHz model heard the start of an utterance up to
  ~0.8 s later than the 16 kHz one (bench/bench_echo.py's rooms).
* The FIR: 49 taps at the (upsampled) filter rate, Hamming window, cutoff 90 % of the model's
  Nyquist. Its group delay is (49 - 1) / 2 taps = 1 ms at 24 kHz; chunk positions are moved
  back by it, so they say when the sound happened at the microphone, not when we saw it.
* Context: silero's own wrapper prepends the last 32 (8 kHz) / 64 (16 kHz) samples of the
  previous window to each 256 / 512-sample window, and carries the (2, 1, 128) recurrent state.
  We do exactly the same, so probabilities match silero's reference streaming.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass

import numpy as np

from facebot.errors import FacebotError

__all__ = ["SileroVad", "VadChunk", "VadConfig", "VadEvent", "VoiceActivity", "find_silero_model"]

_MODEL_FILE = "silero_vad.onnx"  # the 8k/16k model; the *_16k* variants take 16 kHz only
_WINDOW = {8000: 256, 16000: 512}  # samples per model call (32 ms)
_CONTEXT = {8000: 32, 16000: 64}  # samples of the previous window prepended (silero's wrapper)
_FIR_TAPS = 49


class VadUnavailable(FacebotError, RuntimeError):
    """silero-vad (its ONNX model) is missing; the message says what to install."""


def find_silero_model() -> str:
    """Path of ``silero_vad.onnx`` inside the installed ``silero_vad`` package.

    The package is located without importing it: its ``__init__`` imports torch.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable("silero-vad is not installed (pip install silero-vad), "
                           "or pass model_path= to SileroVad")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "data", _MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise VadUnavailable(f"{_MODEL_FILE} not found in the silero_vad package; pass model_path=")


@dataclass(frozen=True)
class VadChunk:
    """Speech probability of one model window; samples on the caller's input timeline."""

    prob: float
    start_sample: int
    end_sample: int


class SileroVad:
    """Streaming silero-vad. Feed audio of any length; get a ``VadChunk`` per 32 ms window.

    Results do not depend on how the audio is split into calls.
    """

    def __init__(self, model_path: str | None = None, sample_rate: int = 24000,
                 model_rate: int = 8000) -> None:
        if model_rate not in _WINDOW:
            raise ValueError(f"model_rate must be 8000 or 16000, got {model_rate}")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        g = math.gcd(sample_rate, model_rate)
        self.up, self.down = model_rate // g, sample_rate // g
        if self.up > 4 or self.down > 12:
            raise ValueError(f"unsupported rate pair {sample_rate} -> {model_rate}")
        hop = _WINDOW[model_rate] * self.down
        if hop % self.up:
            raise ValueError(f"a model window is not a whole number of input samples "
                             f"at {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.model_rate = model_rate
        self.window = _WINDOW[model_rate]
        self.context_size = _CONTEXT[model_rate]
        self.hop = hop // self.up  # input samples per model window (768 = 32 ms at 24 kHz)
        self.model_path = model_path or find_silero_model()

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one 32 ms window is tiny; threads only add jitter
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.model_path, sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._sr = np.array(model_rate, dtype=np.int64)

        self._fir = None
        if self.up != 1 or self.down != 1:
            from scipy.signal import firwin

            fir_rate = sample_rate * self.up
            cutoff = 0.9 * min(sample_rate, model_rate) / 2
            # Gain `up` restores the level lost to zero-stuffing.
            self._fir = (firwin(_FIR_TAPS, cutoff, fs=fir_rate) * self.up).astype(np.float64)
        # Group delay in input samples, rounded: 24 at 24k -> 8k, 12 at 24k -> 16k.
        self.delay = int(round((_FIR_TAPS - 1) / 2 / self.up)) if self._fir is not None else 0
        self.bad_samples = 0
        self.reset()

    def reset(self) -> None:
        """Forget all history: filter state, partial window, context, recurrent state, clock."""
        self._zi = np.zeros(_FIR_TAPS - 1) if self._fir is not None else None
        self._up_pos = 0  # samples of the upsampled stream filtered so far
        self._pending = np.zeros(0, dtype=np.float32)  # model-rate samples not yet run
        self._context = np.zeros((1, self.context_size), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._windows = 0  # model windows run so far

    def _to_model_rate(self, x: np.ndarray) -> np.ndarray:
        if self._fir is None:
            return x.astype(np.float32)
        from scipy.signal import lfilter

        if self.up > 1:
            stuffed = np.zeros(len(x) * self.up)
            stuffed[:: self.up] = x
            x = stuffed
        y, self._zi = lfilter(self._fir, 1.0, x, zi=self._zi)
        first = (-self._up_pos) % self.down  # keep every `down`-th sample of the whole stream
        self._up_pos += len(x)
        return y[first:: self.down].astype(np.float32)

    def process(self, audio: np.ndarray) -> list[VadChunk]:
        """Feed the next piece of the input stream; return the windows it completed."""
        x = np.asarray(audio)
        if x.ndim != 1:
            raise ValueError(f"expected mono 1-D audio, got shape {x.shape}")
        if x.dtype.kind not in "fiu":
            raise TypeError(f"expected float audio, got {x.dtype}")
        x = x.astype(np.float64)
        bad = ~np.isfinite(x)
        if bad.any():  # a broken driver or decoder: treat as silence, keep count
            self.bad_samples += int(bad.sum())
            x[bad] = 0.0
        np.clip(x, -1.0, 1.0, out=x)
        if not len(x):
            return []
        self._pending = np.concatenate([self._pending, self._to_model_rate(x)])
        out = []
        n = len(self._pending) // self.window
        for i in range(n):
            window = self._pending[i * self.window:(i + 1) * self.window][None, :]
            model_in = np.concatenate([self._context, window], axis=1)
            prob, self._state = self._session.run(
                None, {"input": model_in, "state": self._state, "sr": self._sr})
            self._context = model_in[:, -self.context_size:]
            start = self._windows * self.hop - self.delay
            out.append(VadChunk(float(prob[0, 0]), max(start, 0), start + self.hop))
            self._windows += 1
        self._pending = self._pending[n * self.window:]
        return out


@dataclass(frozen=True)
class VadConfig:
    """Hysteresis settings. Defaults follow silero's own speech-timestamp logic where it fits a
    live conversation:

    * ``threshold`` 0.5: silero's default decision point for "speech".
    * ``neg_threshold`` 0.35: silero uses ``threshold - 0.15`` to leave speech, so a word's
      weaker tail does not flicker the state.
    * ``min_speech_ms`` 64: two 32 ms windows above threshold; a single window is often a click,
      a cough onset or a door, two rarely are. Adds 32 ms of decision latency, not of error:
      the onset is reported at the first window's start.
    * ``min_silence_ms`` 200: bridges stop closures and gaps between words (mostly < 150 ms)
      while staying well under the 500-700 ms pause that ends a conversational turn, which is
      for the turn-taking logic above this to decide.
    * ``echo_min_speech_ms`` 32: on audio the echo canceller was cleaning of the robot's voice
      (``AudioFrame.echo_suppressed``) one window makes an onset. AEC3's residual-echo
      suppressor already holds a user who talks over the robot back for ~50-150 ms and lets
      the speech through only once it dominates the echo, so that hold is the confirmation a
      second window would give, and waiting for it again made barge-in 30 ms later.
    * ``echo_threshold`` 0.4: on such audio that one window may also be less sure. When AEC3
      releases a user it held, silero's first window over them often scores 0.4-0.5 and the
      next 0.9+, so 0.5 cost a further 32 ms in some rooms (bench/bench_echo.py
      --vad-echo-threshold 0.5: room 6 156 -> 124 ms; 1 of 20 rooms, 3 of 20 with voices
      synthesised in one process). The echo AEC3 lets through once settled scored at most
      0.17 per 80 ms frame in 38 rooms, with louder and more distorted speakers and an
      unreported 700 ms delay among them (the bench's "echo leak"); single windows right
      after a delay jump reached 0.35. Never above ``threshold``.

    ``for_threshold`` derives ``neg_threshold`` from ``threshold`` as silero does, so any
    threshold an operator picks makes a valid pair.
    """

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: float = 64.0
    min_silence_ms: float = 200.0
    echo_min_speech_ms: float = 32.0
    echo_threshold: float = 0.4

    @classmethod
    def for_threshold(cls, threshold: float, echo_threshold: float = 0.4) -> "VadConfig":
        """The defaults around ``threshold``: speech is left below ``threshold - 0.15``
        (silero's rule), but never below half the threshold."""
        return cls(threshold=threshold, neg_threshold=max(threshold - 0.15, threshold / 2),
                   echo_threshold=echo_threshold)

    @property
    def echo_start_threshold(self) -> float:
        """What starts a run on echo-suppressed audio."""
        return min(self.threshold, self.echo_threshold)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {self.neg_threshold}")
        if not 0.0 < self.echo_threshold < 1.0:
            raise ValueError(f"echo_threshold must be in (0, 1), got {self.echo_threshold}")
        if self.min_speech_ms < 0 or self.min_silence_ms < 0 or self.echo_min_speech_ms < 0:
            raise ValueError("min_speech_ms, min_silence_ms and echo_min_speech_ms must be >= 0")


@dataclass(frozen=True)
class VadEvent:
    kind: str  # 'onset' | 'offset'
    sample: int  # on the input timeline: where the speech run starts / ends


class VoiceActivity:
    """Onset/offset tracker over ``VadChunk``s with hysteresis and minimum durations.

    A run of speech starts with a window at or above ``threshold`` (``echo_threshold`` on
    echo-suppressed audio) and continues while windows stay at or above ``neg_threshold``.
    It becomes an onset once it lasts ``min_speech_ms`` (``echo_min_speech_ms`` on
    echo-suppressed audio); the event's sample is where the run began. While speaking,
    ``min_silence_ms`` of windows below ``neg_threshold`` make an offset, placed at the end
    of the last speech window.
    """

    def __init__(self, threshold: float = 0.5, neg_threshold: float = 0.35,
                 min_speech_ms: float = 64.0, min_silence_ms: float = 200.0,
                 sample_rate: int = 24000, echo_min_speech_ms: float = 32.0,
                 echo_threshold: float = 0.4) -> None:
        self.config = VadConfig(threshold, neg_threshold, min_speech_ms, min_silence_ms, echo_min_speech_ms,
                                echo_threshold)
        self.sample_rate = sample_rate
        self.reset()

    @classmethod
    def from_config(cls, config: VadConfig, sample_rate: int = 24000) -> "VoiceActivity":
        return cls(config.threshold, config.neg_threshold, config.min_speech_ms,
                   config.min_silence_ms, sample_rate, config.echo_min_speech_ms, config.echo_threshold)

    def reset(self) -> None:
        self._speaking = False
        self._run_start: int | None = None  # start of the current run (candidate or live)
        self._run_end = 0  # end of the current run's last speech window
        self._speech_end: int | None = None  # end of the last confirmed speech window
        self._last_run = (0, 0)  # (start, end) of the last completed speech run
        self._now = 0  # end of the latest window seen

    def _ms(self, samples: int) -> float:
        return 1000.0 * samples / self.sample_rate

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def silence_ms(self) -> float:
        """Time since the end of the last speech window of a confirmed run (all time seen if
        there was none). Blips too short to be an onset do not reset it."""
        return self._ms(self._now - (self._speech_end if self._speech_end is not None else 0))

    @property
    def speech_ms(self) -> float:
        """Length of the current speech run, or of the last one when not speaking."""
        if self._speaking:
            return self._ms(self._run_end - self._run_start)
        start, end = self._last_run
        return self._ms(end - start)

    def update(self, chunks, echo_suppressed: bool = False) -> list[VadEvent]:
        """Advance over ``chunks`` (in stream order); return the onsets/offsets they caused.

        ``echo_suppressed``: the chunks' audio came out of an echo canceller working on the
        robot's voice (see ``VadConfig.echo_min_speech_ms``)."""
        cfg = self.config
        min_speech_ms = cfg.echo_min_speech_ms if echo_suppressed else cfg.min_speech_ms
        start = cfg.echo_start_threshold if echo_suppressed else cfg.threshold
        events: list[VadEvent] = []
        for c in chunks:
            self._now = c.end_sample
            if self._speaking:
                if c.prob >= cfg.neg_threshold:
                    self._run_end = self._speech_end = c.end_sample
                elif self._ms(c.end_sample - self._run_end) >= cfg.min_silence_ms:
                    self._speaking = False
                    self._last_run = (self._run_start, self._run_end)
                    self._run_start = None
                    events.append(VadEvent("offset", self._run_end))
                continue
            if self._run_start is None:
                if c.prob >= start:
                    self._run_start, self._run_end = c.start_sample, c.end_sample
            elif c.prob >= cfg.neg_threshold:
                self._run_end = c.end_sample
            else:  # the candidate run was too short: a blip, not speech
                self._run_start = None
            if (self._run_start is not None
                    and self._ms(self._run_end - self._run_start) >= min_speech_ms):
                self._speaking = True
                self._speech_end = self._run_end
                events.append(VadEvent("onset", self._run_start))
        return events
