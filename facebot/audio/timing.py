"""Timed speech units (phonemes, words) that a speech source reports with its audio.

Times are seconds on the timeline of the audio they belong to. The face follows them, so
they must describe the audio as it will be heard, not as it was generated.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhonemeSpan:
    """One phoneme, named by its espeak-ng mnemonic (e.g. ``'a'``, ``'p'``, ``'_:'`` pause)."""

    phoneme: str
    start_s: float
    end_s: float

    def shifted(self, offset_s: float) -> "PhonemeSpan":
        return PhonemeSpan(self.phoneme, self.start_s + offset_s, self.end_s + offset_s)


@dataclass(frozen=True)
class WordSpan:
    """One word of the spoken text with its timing."""

    text: str
    start_s: float
    end_s: float

    def shifted(self, offset_s: float) -> "WordSpan":
        return WordSpan(self.text, self.start_s + offset_s, self.end_s + offset_s)
