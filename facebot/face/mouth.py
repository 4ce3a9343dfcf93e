"""Lips and jaw of the procedural face, per face frame.

From the phoneme timing when the source gives it: the viseme trajectory (facebot.face.visemes)
at each frame time. Without timing, from the robot audio: a 40 ms RMS envelope centred
``audio_lead_s`` after the frame time, auto-gained and compressed, with an instant attack and
an exponential release, opens the jaw; the spectral tilt (energy of the first difference over
energy) rounds the lips for dark sounds and stretches them for bright ones. A barge-in closes
the mouth at once and keeps it at rest for ``barge_in_hold_s``.
"""
from __future__ import annotations

import math

import numpy as np

from facebot.config.face import ProceduralFaceConfig
from facebot.face.controls import CONTROL_INDEX, N_CONTROLS
from facebot.face.cues import CUE_PERIOD_S, FRAME_PERIOD_S, FRAMES_PER_CUE
from facebot.face.smoothing import first_order_share
from facebot.face.visemes import viseme_trajectory

ENVELOPE_HALF_WINDOW_S = 0.02  # half of the 40 ms RMS window
# level = (rms / reference) ** this: soft syllables still open the jaw visibly
ENVELOPE_COMPRESSION = 0.7

_J = CONTROL_INDEX


class Mouth:
    """``begin_cue`` once per cue, then ``frame(k, dt)`` for each of its frames: the lip
    controls (jaw_open, lip_press, ...) in [0, 1]; ``envelope`` is the audio level in [0, 1]."""

    def __init__(self, config: ProceduralFaceConfig, sample_rate: int):
        self.config = config
        self.sample_rate = sample_rate
        self._n_cue = round(CUE_PERIOD_S * sample_rate)
        self._half = max(1, round(ENVELOPE_HALF_WINDOW_S * sample_rate))
        self._tail = np.zeros(self._half * 2)
        self.lips = np.zeros(N_CONTROLS)
        self.envelope = 0.0
        self._ref = config.audio_min_ref_rms
        self._barge_until = -1.0
        self._features: list[tuple[float, float]] = []
        self._targets: np.ndarray | None = None
        self._barging = False

    def begin_cue(self, audio, phonemes, barge_in: bool, t0: float) -> bool:
        """Reads the cue's audio and phonemes; returns whether the mouth is held shut
        (barge-in now or within ``barge_in_hold_s`` of one)."""
        c = self.config
        self._features = self._audio_features(self._clean_audio(audio))
        if barge_in:
            self._barge_until = t0 + c.barge_in_hold_s
            self.envelope = 0.0
            self.lips[:] = 0.0
        self._barging = barge_in or t0 < self._barge_until - 1e-9
        if self._barging:
            self._targets = np.zeros((FRAMES_PER_CUE, N_CONTROLS))
        elif phonemes is not None:
            try:
                self._targets = viseme_trajectory(
                    phonemes, [0.0, FRAME_PERIOD_S], c.anticipation_s, c.coarticulation_s
                )
            except Exception:  # a pathological sequence: fall back to the audio
                self._targets = None
        else:
            self._targets = None
        return self._barging

    def frame(self, k: int, dt: float) -> np.ndarray:
        """Lip controls of the cue's frame ``k``."""
        c = self.config
        rms, bright = self._features[k]
        self._ref = max(self._ref * math.exp(-dt / c.audio_agc_decay_s), rms, c.audio_min_ref_rms)
        level = (rms / self._ref) ** ENVELOPE_COMPRESSION if rms > c.audio_gate_rms else 0.0
        level = min(1.0, max(0.0, level))
        if self._barging:
            self.envelope = 0.0
        elif level > self.envelope:
            self.envelope += (level - self.envelope) * first_order_share(dt, c.audio_attack_s)
        else:
            self.envelope = level + (self.envelope - level) * math.exp(-dt / max(c.audio_release_s, 1e-6))

        if self._targets is not None:
            target = self._targets[k] * c.lip_gain
        else:
            target = np.zeros(N_CONTROLS)
            env = self.envelope
            target[_J["jaw_open"]] = c.audio_jaw_max * env
            target[_J["lip_round"]] = c.spectral_hint_gain * env * (1.0 - bright) ** 2
            target[_J["lip_stretch"]] = c.spectral_hint_gain * env * bright
            target *= c.lip_gain
        target = np.clip(np.nan_to_num(target, nan=0.0), 0.0, 1.0)
        if self._barging:
            self.lips = target
        else:
            self.lips = self.lips + (target - self.lips) * first_order_share(dt, c.lip_smoothing_s)
        return self.lips

    def _clean_audio(self, audio) -> np.ndarray:
        """One cue of finite samples in [-1, 1], zero-padded; anything unreadable is silence."""
        try:
            a = np.asarray(audio)
            if a.dtype.kind == "c":
                a = a.real
            a = a.astype(np.float64).reshape(-1) if a.dtype.kind in "fiub" else np.zeros(0)
        except Exception:
            a = np.zeros(0)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        a = np.clip(a, -1.0, 1.0)
        out = np.zeros(self._n_cue)
        n = min(a.size, self._n_cue)
        out[:n] = a[:n]
        return out

    def _audio_features(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """(rms, brightness in [0, 1]) of the 40 ms window around each frame time + lead."""
        c = self.config
        buf = np.concatenate([self._tail, audio])
        off = self._tail.size
        feats = []
        for k in range(FRAMES_PER_CUE):
            centre = off + round((k * FRAME_PERIOD_S + c.audio_lead_s) * self.sample_rate)
            lo, hi = max(0, centre - self._half), min(buf.size, centre + self._half)
            w = buf[lo:hi]
            energy = float(np.mean(w * w)) if w.size else 0.0
            rms = math.sqrt(energy)
            if w.size > 1 and energy > 1e-12:
                hf = float(np.mean(np.diff(w) ** 2)) / energy  # 2 - 2cos(2 pi f / fs) for a tone
                # 0 at hf = 0.01 (~380 Hz at 24 kHz), 1 at hf = 1 (~4 kHz)
                bright = min(1.0, max(0.0, math.log10(max(hf, 1e-6) / 0.01) / 2.0))
            else:
                bright = 0.0
            feats.append((rms if math.isfinite(rms) else 0.0, bright))
        self._tail = buf[-2 * self._half:].copy()
        return feats
