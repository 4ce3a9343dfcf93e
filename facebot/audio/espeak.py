"""Speech with phoneme and word timing from libespeak-ng, through a small ctypes binding.

espeak-ng is the robot's fallback voice and the test suite's speech source: it is fast,
deterministic, and reports exactly when each phoneme and word starts, which is what the
face needs to move its lips in time with the sound.

The library keeps global state (one voice, one callback, one set of parameters), so it is
initialised once per process, in synchronous mode with phoneme events, and every synthesis
runs under one process-wide lock. The binding follows ``speak_lib.h`` of espeak-ng 1.51.
"""
from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import re
import threading
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from facebot.audio.timing import PhonemeSpan, WordSpan
from facebot.errors import FacebotError

__all__ = ["EspeakUnavailable", "EspeakVoice", "EspeakVoiceError", "SpeechClip", "espeak_native_rate"]


class EspeakUnavailable(FacebotError, RuntimeError):
    """libespeak-ng is missing or will not start; the message says what to install."""


class EspeakVoiceError(FacebotError, ValueError):
    """The configured voice does not exist in this espeak-ng."""


_INSTALL_HINT = (
    "libespeak-ng is not installed or cannot be loaded. Install it with "
    "`sudo apt-get install libespeak-ng1 espeak-ng-data` (Debian/Ubuntu) "
    "or your platform's espeak-ng package."
)

# speak_lib.h constants used here.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7

# Ranges from speak_lib.h: rate 80..450 wpm, pitch 0..100, volume 0..200 (100 = normal).
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 100)
VOLUME_RANGE = (0, 200)


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT``. On x86-64/aarch64: 6 x 4-byte ints, an 8-aligned pointer, the
    8-byte union; 40 bytes in all (checked at load time)."""

    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE (a C enum: int-sized)
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character index into the input text
        ("length", ctypes.c_int),  # word length in characters (WORD events)
        ("audio_position", ctypes.c_int),  # ms from the start of this message's audio
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class SpeechClip:
    """Synthesised speech and its timing. Times are seconds on ``audio``'s timeline."""

    audio: np.ndarray  # float32 mono in [-1, 1] at sample_rate
    sample_rate: int
    phonemes: list[PhonemeSpan] = field(default_factory=list)
    words: list[WordSpan] = field(default_factory=list)
    text: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


class _Collector:
    """What the synth callback gathers during one ``espeak_Synth`` call."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        # (type, audio_position_ms, text_position, length, phoneme mnemonic)
        self.events: list[tuple[int, int, int, int, str]] = []
        self.error: BaseException | None = None


_lock = threading.Lock()
_CLIP_CACHE_SIZE = 256
_clip_cache: dict[tuple, "SpeechClip"] = {}
_lib = None
_native_rate = 0
_callback_ref = None  # keeps the ctypes thunk alive for the life of the process
_current: _Collector | None = None


def _synth_callback(wav, numsamples, events):
    collector = _current
    if collector is None:
        return 0
    try:
        if wav and numsamples > 0:
            raw = ctypes.string_at(wav, numsamples * ctypes.sizeof(ctypes.c_short))
            collector.chunks.append(np.frombuffer(raw, dtype=np.int16).copy())
        if events:
            i = 0
            while True:
                ev = events[i]
                if ev.type == _EVENT_LIST_TERMINATED:
                    break
                name = ""
                if ev.type == _EVENT_PHONEME:
                    # char[8], zero-terminated unless the name fills all 8 bytes.
                    raw_id = bytes(ev.id.string)  # ctypes stops at the first zero byte
                    name = raw_id[:8].decode("utf-8", errors="replace")
                collector.events.append(
                    (ev.type, ev.audio_position, ev.text_position, ev.length, name)
                )
                i += 1
    except BaseException as exc:  # never let an exception unwind through C
        collector.error = exc
        return 1  # non-zero asks espeak to abort this synthesis
    return 0


def _load() -> None:
    """Load and initialise libespeak-ng once per process. Call with ``_lock`` held."""
    global _lib, _native_rate, _callback_ref
    if _lib is not None:
        return
    assert ctypes.sizeof(_Event) == (40 if ctypes.sizeof(ctypes.c_void_p) == 8 else 32)
    lib = None
    for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise EspeakUnavailable(_INSTALL_HINT)

    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int

    # buflength 0 = espeak's default 60 ms callback buffers. The return value is the
    # native sample rate (22050 Hz for the standard voices), or -1 on failure.
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
    if rate <= 0:
        raise EspeakUnavailable(
            f"espeak_Initialize failed ({rate}); is espeak-ng-data installed? " + _INSTALL_HINT
        )
    _callback_ref = _CALLBACK(_synth_callback)
    lib.espeak_SetSynthCallback(_callback_ref)
    _lib, _native_rate = lib, rate


def in_fresh_interpreter(fn, *args):
    """``fn(*args)`` run in a new Python interpreter, its result sent back.

    espeak-ng's audio depends slightly on what its process synthesised before (a syllable
    may shift by a few ms), so a measurement that compares runs on the exact audio (the echo
    bench and tests) synthesises apart; ``fn`` and ``args`` must pickle."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def espeak_native_rate() -> int:
    """espeak-ng's output sample rate, as reported by ``espeak_Initialize``."""
    with _lock:
        _load()
        return _native_rate


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} out of range [{lo}, {hi}]")
    return int(value)


class EspeakVoice:
    """One espeak-ng voice with fixed parameters. Cheap to create; thread-safe to use."""

    def __init__(self, voice: str = "en-us", rate_wpm: int = 150, pitch: int = 50,
                 volume: int = 100) -> None:
        if not isinstance(voice, str) or not voice or "\0" in voice:
            raise ValueError(f"voice must be a non-empty name, got {voice!r}")
        self.voice = voice
        self.rate_wpm = _check_range("rate_wpm", rate_wpm, RATE_RANGE)
        self.pitch = _check_range("pitch", pitch, PITCH_RANGE)
        self.volume = _check_range("volume", volume, VOLUME_RANGE)

    def __repr__(self) -> str:
        return (f"EspeakVoice(voice={self.voice!r}, rate_wpm={self.rate_wpm}, "
                f"pitch={self.pitch}, volume={self.volume})")

    def synthesize(self, text: str, sample_rate: int = 24000) -> SpeechClip:
        """Speak ``text``; return the audio at ``sample_rate`` with phoneme and word timing.

        libespeak-ng keeps synthesis state between calls, so the same text can come out
        slightly different depending on what was spoken before. Clips are therefore kept per
        (voice, parameters, text, rate) for the life of the process: the same request always
        returns the same samples, which makes seeded sessions reproducible.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str")
        sample_rate = _check_range("sample_rate", sample_rate, (1000, 384000))
        key = (self.voice, self.rate_wpm, self.pitch, self.volume, text, sample_rate)
        with _lock:
            clip = _clip_cache.get(key)
        if clip is None:
            clip = self._synthesize(text, sample_rate)
            with _lock:
                _clip_cache[key] = clip
                while len(_clip_cache) > _CLIP_CACHE_SIZE:
                    del _clip_cache[next(iter(_clip_cache))]
        return SpeechClip(audio=clip.audio.copy(), sample_rate=clip.sample_rate, phonemes=list(clip.phonemes),
                          words=list(clip.words), text=clip.text)

    def _synthesize(self, text: str, sample_rate: int) -> SpeechClip:
        global _current
        text_bytes = text.replace("\0", " ").encode("utf-8")
        collector = _Collector()
        with _lock:
            _load()
            native = _native_rate
            if _lib.espeak_SetVoiceByName(self.voice.encode("utf-8")) != 0:
                raise EspeakVoiceError(f"espeak-ng has no voice named {self.voice!r} (`espeak-ng --voices` lists them)")
            for param, value in ((_PARAM_RATE, self.rate_wpm), (_PARAM_PITCH, self.pitch),
                                 (_PARAM_VOLUME, self.volume)):
                if _lib.espeak_SetParameter(param, value, 0) != 0:
                    raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed")
            buf = ctypes.create_string_buffer(text_bytes)
            _current = collector
            try:
                err = _lib.espeak_Synth(buf, len(text_bytes) + 1, 0, _POS_CHARACTER, 0,
                                        _CHARS_UTF8, None, None)
            finally:
                _current = None
        if collector.error is not None:
            raise RuntimeError("error while collecting espeak output") from collector.error
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")

        pcm = np.concatenate(collector.chunks) if collector.chunks else np.zeros(0, np.int16)
        audio = pcm.astype(np.float32) / 32768.0
        if sample_rate != native and len(audio):
            import soxr

            audio = soxr.resample(audio, native, sample_rate, quality="HQ").astype(np.float32)
        np.clip(audio, -1.0, 1.0, out=audio)
        duration = len(audio) / sample_rate
        phonemes = _phoneme_spans(collector.events, duration)
        words = _word_spans(collector.events, text, phonemes, duration)
        return SpeechClip(audio=audio, sample_rate=sample_rate, phonemes=phonemes,
                          words=words, text=text)


def _phoneme_spans(events, duration: float) -> list[PhonemeSpan]:
    """Each phoneme runs from its event to the next one (the last to the end of the audio).

    espeak's ``audio_position`` is in whole ms of the message's audio, the same instant on any
    resampled copy, so it converts to seconds directly. Pauses come as pause phonemes
    (``_``, ``_:``, ...) and are kept. If the first event is late, the gap is a leading pause.
    """
    marks = [(min(pos / 1000.0, duration), name) for typ, pos, _, _, name in events
             if typ == _EVENT_PHONEME and name]
    spans: list[PhonemeSpan] = []
    if marks and marks[0][0] > 0.0:
        marks.insert(0, (0.0, "_"))
    for i, (start, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else duration
        if end > start:  # zero-length events (same ms) carry no time
            spans.append(PhonemeSpan(name, start, end))
    return spans


def _strip_punctuation(token: str) -> str:
    """Drop leading/trailing punctuation (Unicode category P*), keep symbols like ``$``."""
    lo, hi = 0, len(token)
    while lo < hi and unicodedata.category(token[lo]).startswith("P"):
        lo += 1
    while hi > lo and unicodedata.category(token[hi - 1]).startswith("P"):
        hi -= 1
    return token[lo:hi] or token


def _word_spans(events, text: str, phonemes: list[PhonemeSpan],
                duration: float) -> list[WordSpan]:
    """Words of the input text, timed by espeak's WORD events.

    A WORD event's ``text_position`` is a 1-based character index into the input. espeak
    emits several events for one written word when it expands it ("123" is spoken as three
    words, all pointing into "123"), and sometimes events with position 0 or length 0. So
    each event is mapped to the whitespace-separated token of the input that holds its
    position, events in the same token are merged, and the word is the token without its
    surrounding punctuation. A word ends at the next word's start or at the first pause
    phoneme after its last event, whichever is earlier, so the silence after a phrase is not a word.
    """
    tokens = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = [a for a, _ in tokens]
    raw: list[list] = []  # [start_s, token index, start of its last event]
    for typ, pos, tpos, _length, _ in events:
        if typ != _EVENT_WORD:
            continue
        t = min(pos / 1000.0, duration)
        if tpos < 1:  # no position: a continuation of the current word
            continue
        k = bisect.bisect_right(starts, tpos - 1) - 1
        if k < 0 or tpos - 1 >= tokens[k][1]:  # between tokens: take the next one
            k += 1
        if k >= len(tokens):
            continue
        if raw and raw[-1][1] >= k:  # same token (or espeak looked back): same word
            raw[-1][2] = t
            continue
        raw.append([t, k, t])
    pause_starts = [p.start_s for p in phonemes if p.phoneme.startswith("_")]
    words = []
    for i, (start, k, last) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else duration
        later_pauses = [s for s in pause_starts if last < s < end]
        if later_pauses:
            end = later_pauses[0]
        a, b = tokens[k]
        words.append(WordSpan(_strip_punctuation(text[a:b]), start, max(end, start)))
    return words
