"""espeak-ng phoneme mnemonics -> viseme targets in face controls, and the lip trajectory.

Mnemonics are those espeak-ng 1.51 reports in its phoneme events for voice ``en-us``
(checked by running the library with ``espeakINITIALIZE_PHONEME_EVENTS`` on a pangram set and
with ``espeak-ng -v en-us -x``). Besides the textbook symbols (``p b m f v T D s z S Z tS dZ
t d n l r k g N h w j``; vowels ``a aI aU A: @ 3: e eI E i: I O: oU OI u: U V 0``) it emits
variants that carry a suffix: ``@2 @5 I2 I# a# t# 0#`` (reduced / flapped forms), ``@L``
(syllabic l), ``n-`` (syllabic n), ``?`` (glottal stop), r-coloured vowels ``A@ e@ i@ i@3
O@ o@ U@ aI@ aI3 aU@ 3``, ``x`` (loch), and pauses ``_`` ``_:`` ``_!`` ``_;`` plus modifiers
such as ``;``.

``viseme_for`` never raises: exact name, then the name with stress / variant marks removed,
then its longest known prefix, then its first character, then a neutral half-open mouth.
Diphthongs have an onset and an offglide target; the trajectory glides between them across
the phoneme.

Coarticulation (``viseme_trajectory``): every phoneme pulls the lips toward its target with a
weight = its *dominance* times a Gaussian of the distance from the sample time to the phoneme's
span (0 inside it), width ``coarticulation_s``; a weak "rest" pull takes over far from any
phoneme. Bilabial closure is a hard constraint on top: inside a p/b/m span the lips are
closed (``lip_press`` = 1, ``jaw_open`` = 0) whatever the neighbours, with a short ramp either
side. The lips lead the sound: the trajectory is sampled ``anticipation_s`` later than the
frame time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from facebot.face.controls import CONTROL_INDEX, N_CONTROLS

__all__ = [
    "Viseme",
    "VISEMES",
    "PAUSES",
    "BILABIALS",
    "REST",
    "NEUTRAL_OPEN",
    "normalize_phoneme",
    "viseme_for",
    "viseme_trajectory",
]


@dataclass(frozen=True)
class Viseme:
    """Lip targets for one phoneme: ``onset`` (and ``offset`` for diphthongs), as control
    arrays, and a coarticulation ``dominance`` (how strongly it resists its neighbours)."""

    onset: np.ndarray
    offset: np.ndarray
    dominance: float
    bilabial: bool = False
    pause: bool = False


def _c(**values: float) -> np.ndarray:
    arr = np.zeros(N_CONTROLS)
    for name, v in values.items():
        arr[CONTROL_INDEX[name]] = v
    arr.setflags(write=False)
    return arr


def _v(dominance: float, onset: np.ndarray, offset: np.ndarray | None = None, **flags) -> Viseme:
    return Viseme(onset, onset if offset is None else offset, dominance, **flags)


REST = _c()
NEUTRAL_OPEN = _c(jaw_open=0.35)

# Lip shapes. Dominance: bilabials 3 (plus the closure constraint), labiodentals 2, lip-shaped
# consonants 1.5, vowels 1, tongue consonants 0.5-0.7 (the lips borrow from the vowels), h 0.2.
_BILABIAL = _v(3.0, _c(lip_press=1.0), bilabial=True)
_LABIODENTAL = _v(2.0, _c(jaw_open=0.1, lip_tuck=1.0))
_DENTAL = _v(0.7, _c(jaw_open=0.2, lip_stretch=0.2))
_ALVEOLAR_FRIC = _v(0.8, _c(jaw_open=0.08, lip_stretch=0.5))
_POSTALVEOLAR = _v(1.5, _c(jaw_open=0.12, lip_funnel=0.8, lip_round=0.3))
_ALVEOLAR = _v(0.6, _c(jaw_open=0.2, lip_stretch=0.15))
_VELAR = _v(0.5, _c(jaw_open=0.25))
_PAUSE = _v(1.0, REST, pause=True)

VISEMES: dict[str, Viseme] = {
    # consonants
    "p": _BILABIAL, "b": _BILABIAL, "m": _BILABIAL,
    "f": _LABIODENTAL, "v": _LABIODENTAL,
    "T": _DENTAL, "D": _DENTAL,
    "s": _ALVEOLAR_FRIC, "z": _ALVEOLAR_FRIC,
    "S": _POSTALVEOLAR, "Z": _POSTALVEOLAR, "tS": _POSTALVEOLAR, "dZ": _POSTALVEOLAR,
    "t": _ALVEOLAR, "d": _ALVEOLAR, "n": _ALVEOLAR, "l": _v(0.6, _c(jaw_open=0.25, lip_stretch=0.1)),
    "r": _v(1.2, _c(jaw_open=0.15, lip_round=0.5, lip_funnel=0.35)),
    "k": _VELAR, "g": _VELAR, "N": _VELAR, "x": _VELAR,
    "h": _v(0.2, _c(jaw_open=0.3)),
    "w": _v(1.8, _c(jaw_open=0.08, lip_round=1.0, lip_funnel=0.2)),
    "j": _v(0.8, _c(jaw_open=0.12, lip_stretch=0.5)),
    "?": _v(0.3, _c(jaw_open=0.15)),
    "@L": _v(0.7, _c(jaw_open=0.3, lip_stretch=0.1)),
    "n-": _ALVEOLAR,
    # vowels
    "a": _v(1.0, _c(jaw_open=0.8, lip_stretch=0.3)),
    "A:": _v(1.0, _c(jaw_open=1.0)),
    "A@": _v(1.0, _c(jaw_open=0.95), _c(jaw_open=0.4, lip_round=0.35)),
    "aI": _v(1.0, _c(jaw_open=0.85, lip_stretch=0.2), _c(jaw_open=0.3, lip_stretch=0.5)),
    "aI@": _v(1.0, _c(jaw_open=0.85, lip_stretch=0.2), _c(jaw_open=0.35, lip_round=0.2)),
    "aI3": _v(1.0, _c(jaw_open=0.85, lip_stretch=0.2), _c(jaw_open=0.35, lip_round=0.3)),
    "aU": _v(1.0, _c(jaw_open=0.85), _c(jaw_open=0.25, lip_round=0.8)),
    "aU@": _v(1.0, _c(jaw_open=0.85), _c(jaw_open=0.35, lip_round=0.4)),
    "@": _v(0.8, _c(jaw_open=0.35)),
    "3": _v(0.9, _c(jaw_open=0.35, lip_round=0.3)),
    "3:": _v(1.0, _c(jaw_open=0.4, lip_round=0.35, lip_funnel=0.2)),
    "e": _v(1.0, _c(jaw_open=0.5, lip_stretch=0.5)),
    "eI": _v(1.0, _c(jaw_open=0.55, lip_stretch=0.45), _c(jaw_open=0.25, lip_stretch=0.6)),
    "E": _v(1.0, _c(jaw_open=0.6, lip_stretch=0.35)),
    "e@": _v(1.0, _c(jaw_open=0.6, lip_stretch=0.3), _c(jaw_open=0.4, lip_round=0.2)),
    "i:": _v(1.0, _c(jaw_open=0.2, lip_stretch=0.85, smile=0.15)),
    "i": _v(0.9, _c(jaw_open=0.25, lip_stretch=0.7)),
    "I": _v(0.9, _c(jaw_open=0.3, lip_stretch=0.5)),
    "i@": _v(1.0, _c(jaw_open=0.3, lip_stretch=0.5), _c(jaw_open=0.4)),
    "i@3": _v(1.0, _c(jaw_open=0.3, lip_stretch=0.5), _c(jaw_open=0.35, lip_round=0.3)),
    "O:": _v(1.0, _c(jaw_open=0.65, lip_round=0.6)),
    "O@": _v(1.0, _c(jaw_open=0.6, lip_round=0.6), _c(jaw_open=0.35, lip_round=0.4)),
    "o@": _v(1.0, _c(jaw_open=0.55, lip_round=0.65), _c(jaw_open=0.35, lip_round=0.4)),
    "oU": _v(1.0, _c(jaw_open=0.5, lip_round=0.6), _c(jaw_open=0.25, lip_round=0.9)),
    "OI": _v(1.0, _c(jaw_open=0.55, lip_round=0.6), _c(jaw_open=0.25, lip_stretch=0.5)),
    "0": _v(1.0, _c(jaw_open=0.8, lip_round=0.25)),
    "u:": _v(1.2, _c(jaw_open=0.15, lip_round=1.0, lip_funnel=0.5)),
    "U": _v(1.0, _c(jaw_open=0.25, lip_round=0.65)),
    "U@": _v(1.0, _c(jaw_open=0.25, lip_round=0.7), _c(jaw_open=0.35, lip_round=0.3)),
    "V": _v(1.0, _c(jaw_open=0.6, lip_stretch=0.1)),
    # pauses (espeak: '_' short, '_:' long, '_!' and '_;' clause/phrase ends, '_^_' switch)
    "_": _PAUSE, "_:": _PAUSE, "_!": _PAUSE, "_;": _PAUSE, "_^_": _PAUSE, "||": _PAUSE, "|": _PAUSE,
}
PAUSES = frozenset(k for k, v in VISEMES.items() if v.pause)
BILABIALS = frozenset(k for k, v in VISEMES.items() if v.bilabial)
_NEUTRAL = _v(0.5, NEUTRAL_OPEN)
# Stress and length marks that never change the lip shape; variant digits and '#'/'-' marks.
_STRIP = str.maketrans("", "", "'," + "%=" + "#-" + "0123456789" + ";")
_MAX_KEY = max(len(k) for k in VISEMES)


def normalize_phoneme(phoneme) -> str:
    """The table key a mnemonic resolves to (``''`` when nothing matches)."""
    try:
        if isinstance(phoneme, (bytes, bytearray)):
            phoneme = bytes(phoneme).decode("utf-8", "replace")
        s = str(phoneme).strip()
    except Exception:  # a __str__ that raises: treat as unknown
        return ""
    if not s:
        return ""
    if s in VISEMES:
        return s
    if s.startswith("_"):
        return "_"
    # '0' is a vowel (the 'cot' vowel): only strip digits after the first character.
    stripped = s[0] + s[1:].translate(_STRIP) if s[0] == "0" else s.translate(_STRIP)
    if stripped in VISEMES:
        return stripped
    for cand in (stripped, s):
        for n in range(min(len(cand), _MAX_KEY), 0, -1):
            if cand[:n] in VISEMES:
                return cand[:n]
    return ""


def viseme_for(phoneme) -> Viseme:
    """The viseme of an espeak-ng mnemonic; never raises (unknown -> neutral half-open)."""
    key = normalize_phoneme(phoneme)
    return VISEMES[key] if key else _NEUTRAL


def _finite_spans(spans) -> list[tuple[Viseme, float, float]]:
    out = []
    if spans is None:
        return out
    try:
        items = list(spans)
    except Exception:
        return out
    for span in items:
        try:
            s = float(span.start_s)
            e = float(span.end_s)
            ph = span.phoneme
        except Exception:
            continue
        if not (math.isfinite(s) and math.isfinite(e)):
            continue
        if e < s:
            s, e = e, s
        if abs(s) > 1e6 or abs(e) > 1e6:  # nothing that far away can matter to a frame
            continue
        if e - s < 1e-3:  # a point event: give it a minimal width around its time
            c = 0.5 * (s + e)
            s, e = c - 0.005, c + 0.005
        out.append((viseme_for(ph), s, e))
    return out


def viseme_trajectory(
    spans: Iterable | None,
    times_s: Sequence[float] | np.ndarray,
    anticipation_s: float = 0.04,
    coarticulation_s: float = 0.05,
    closure_ramp_s: float = 0.025,
    rest_weight: float = 0.05,
) -> np.ndarray:
    """Lip controls ``[len(times_s), N_CONTROLS]`` (in [0, 1]) at the given frame times.

    ``spans`` are ``PhonemeSpan``-like objects (``phoneme``, ``start_s``, ``end_s``) on the same
    timeline as ``times_s``. Spans with non-finite times are skipped, reversed ones swapped;
    an empty list gives the rest pose. Only lip controls are set (affect controls stay 0).
    """
    t = np.asarray(times_s, np.float64).reshape(-1) + float(anticipation_s)
    out = np.zeros((t.shape[0], N_CONTROLS))
    items = _finite_spans(spans)
    if t.shape[0] == 0:
        return out
    tau = max(float(coarticulation_s), 1e-3)
    ramp = max(float(closure_ramp_s), 1e-3)
    wsum = np.full(t.shape[0], float(rest_weight))
    acc = np.zeros_like(out)  # rest target is all zeros, so it only adds weight
    closure = np.zeros(t.shape[0])
    t_lo, t_hi = float(t.min()), float(t.max())
    reach = 6.0 * max(tau, ramp)  # beyond this a phoneme's pull is < exp(-36)
    for vis, s, e in items:
        if s > t_hi + reach or e < t_lo - reach:
            continue
        d = np.maximum(0.0, np.maximum(s - t, t - e))  # 0 inside the span
        w = vis.dominance * np.exp(-np.square(d / tau))
        frac = np.clip((t - s) / max(e - s, 1e-6), 0.0, 1.0)[:, None]
        target = vis.onset[None, :] * (1.0 - frac) + vis.offset[None, :] * frac
        acc += w[:, None] * target
        wsum += w
        if vis.bilabial:
            closure = np.maximum(closure, np.exp(-np.square(d / ramp)))
    out = acc / wsum[:, None]
    # Bilabial closure: lips together whatever the neighbours do.
    jaw, press = CONTROL_INDEX["jaw_open"], CONTROL_INDEX["lip_press"]
    keep = 1.0 - closure
    out[:, jaw] *= keep
    for name in ("lip_round", "lip_funnel", "lip_stretch", "lip_tuck"):
        out[:, CONTROL_INDEX[name]] *= 1.0 - 0.6 * closure
    out[:, press] = np.maximum(out[:, press], closure)
    out[~np.isfinite(out)] = 0.0
    return np.clip(out, 0.0, 1.0)
