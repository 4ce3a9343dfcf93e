"""The scripted bring-up backend: real speech from espeak-ng, real turn-taking, no model.

It stands where the model will go so that a robot can be brought up, and the full-duplex
behaviours tested, without a GPU: it replies with the next line of its script when the
user's turn ends, backchannels in the user's pauses, and stops within the current 80 ms
frame when the user barges in. All lines are synthesised when the session starts, so a
step never waits for the synthesiser.
"""
from __future__ import annotations

import numpy as np

from facebot.audio.espeak import EspeakVoice, SpeechClip
from facebot.audio.framing import FRAME_SAMPLES, MODEL_RATE
from facebot.pipeline.backend import DuplexInput, DuplexOutput, SpeechBackend
from facebot.config.scripted import ScriptedConfig
from facebot.pipeline.turns import TurnTaker

FADE_SAMPLES = 48  # 2 ms: long enough to avoid a click, short enough to stop at once
PHONEME_WINDOW_S = (-0.2, 0.4)  # the span of phoneme timing the face gets (see FaceCue)


class _Playback:
    """One clip being played out frame by frame."""

    def __init__(self, clip: SpeechClip, gain: float, is_backchannel: bool) -> None:
        self.clip = clip
        self.audio = np.clip(clip.audio * gain, -1.0, 1.0).astype(np.float32)
        self.pos = 0  # samples already played
        self.is_backchannel = is_backchannel
        self._words_said = 0

    @property
    def done(self) -> bool:
        return self.pos >= self.audio.shape[0]

    def take(self, n: int) -> tuple[np.ndarray, str]:
        out = np.zeros(n, np.float32)
        chunk = self.audio[self.pos:self.pos + n]
        out[: chunk.shape[0]] = chunk
        end_s = (self.pos + n) / MODEL_RATE
        words = []
        while self._words_said < len(self.clip.words) and self.clip.words[self._words_said].start_s < end_s:
            words.append(self.clip.words[self._words_said].text)
            self._words_said += 1
        self.pos += n
        return out, " ".join(words)

    def phonemes_around(self, frame_start: int):
        t0 = frame_start / MODEL_RATE
        lo, hi = PHONEME_WINDOW_S
        return [
            p.shifted(-t0) for p in self.clip.phonemes if p.end_s - t0 >= lo and p.start_s - t0 <= hi
        ]


class ScriptedBackend(SpeechBackend):
    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None) -> None:
        self.config = config or ScriptedConfig()
        cfg = self.config
        voice = EspeakVoice(voice=cfg.voice, rate_wpm=cfg.rate_wpm, pitch=cfg.pitch)
        self._replies = [voice.synthesize(t, sample_rate=MODEL_RATE) for t in cfg.replies]
        self._backchannels = [voice.synthesize(t, sample_rate=MODEL_RATE) for t in cfg.backchannels]
        self.turns = TurnTaker(cfg.turns)
        self.reset()

    def describe(self) -> str:
        return f"scripted (espeak-ng {self.config.voice}, {len(self._replies)} lines)"

    def reset(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self.turns.reset()
        self._playing: _Playback | None = None
        self._reply_pending = False  # the user's turn ended while a backchannel was playing
        self._next_reply = 0
        self.replies_started = 0
        self.replies_interrupted = 0
        self.backchannels_played = 0

    def _start_reply(self) -> None:
        if self._next_reply >= len(self._replies):
            if not self.config.loop_script:
                return
            self._next_reply = 0
        self._playing = _Playback(self._replies[self._next_reply], self.config.reply_gain, False)
        self._next_reply += 1
        self.replies_started += 1

    def _start_backchannel(self) -> None:
        clip = self._backchannels[int(self._rng.integers(len(self._backchannels)))]
        self._playing = _Playback(clip, self.config.backchannel_gain, True)
        self.backchannels_played += 1

    def step(self, inp: DuplexInput) -> DuplexOutput:
        speaking_reply = self._playing is not None and not self._playing.is_backchannel
        # Backchannels overlap the user by design: they neither block a reply nor get cut.
        decision = self.turns.update(inp.user, robot_speaking=speaking_reply)
        if decision.barge_in and speaking_reply:
            return self._stop_for_barge_in(decision.user_pause)
        if decision.reply:
            self._reply_pending = True
        if self._playing is None:
            if self._reply_pending:
                self._reply_pending = False
                self._start_reply()
            elif decision.backchannel and self._backchannels:
                self._start_backchannel()
        if self._playing is None:
            return DuplexOutput(audio=np.zeros(FRAME_SAMPLES, np.float32), user_pause=decision.user_pause)
        playing = self._playing
        phonemes = playing.phonemes_around(playing.pos)
        audio, words = playing.take(FRAME_SAMPLES)
        if playing.done:
            self._playing = None
        return DuplexOutput(
            audio=audio,
            speaking=not playing.is_backchannel,
            text=words,
            phonemes=phonemes,
            backchannel=playing.is_backchannel,
            user_pause=decision.user_pause,
        )

    def _stop_for_barge_in(self, user_pause: bool) -> DuplexOutput:
        """Fades the reply out over the first 2 ms of this frame and drops the rest."""
        playing = self._playing
        audio = np.zeros(FRAME_SAMPLES, np.float32)
        tail = playing.audio[playing.pos:playing.pos + FADE_SAMPLES]
        audio[: tail.shape[0]] = tail * np.linspace(1.0, 0.0, FADE_SAMPLES, dtype=np.float32)[: tail.shape[0]]
        self._playing = None
        self.replies_interrupted += 1
        return DuplexOutput(audio=audio, speaking=False, barge_in=True, phonemes=[], user_pause=user_pause)
