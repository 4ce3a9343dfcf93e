"""Speech recognition for tests: does synthesized or played-back audio say what it should?

pocketsphinx 5 with its bundled US-English acoustic model, language model and dictionary.
It is small, offline and deterministic, which is all a test oracle needs; its accuracy on
espeak's voice is modest, so tests should ask for "enough of the words", not all of them.
"""
from __future__ import annotations

import functools
import re

import numpy as np

MODEL_RATE = 16000  # the bundled en-us acoustic model is trained on 16 kHz speech


@functools.lru_cache(maxsize=1)
def _decoder():
    from pocketsphinx import Decoder

    # Decoder() with no hmm/lm/dict loads the bundled en-us model; silence its log chatter.
    return Decoder(samprate=MODEL_RATE, loglevel="FATAL")


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Recognise mono ``audio`` (float in [-1, 1], or int16) and return lower-case words."""
    import soxr

    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {x.shape}")
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate != MODEL_RATE:
        x = soxr.resample(x, sample_rate, MODEL_RATE)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    dec = _decoder()
    dec.start_utt()
    dec.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    if hyp is None:
        return ""
    words = [w for w in hyp.hypstr.lower().split() if not re.fullmatch(r"<.*>|\[.*\]", w)]
    # Alternate pronunciations come back as "word(2)": keep the word.
    return " ".join(re.sub(r"\(\d+\)$", "", w) for w in words)
