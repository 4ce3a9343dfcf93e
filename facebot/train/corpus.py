"""A synthetic dyadic (two-person) talking-face corpus, for tests and for evaluation here.

Two espeak-ng voices hold a conversation: they take turns built from a varied sentence pool,
sometimes start before the other has finished (short overlaps), and the listener drops
backchannels ("hmm", "uh huh", "yeah", "right", ...) into the speaker's pauses. Each person's
face is facebot's ``ProceduralFace``: while they speak it is driven by their **own** phoneme
timing (a ``FaceCue`` per 80 ms frame with the phonemes around it, relative to the frame) and
their own voice; while they listen it gets listening cues (``user_speaking`` while the
partner talks, ``user_pause`` a moment into the partner's mid-turn pauses, ``backchannel``
when they say one), so listeners lean in, nod and blink. Everything is seeded: the same
``seed`` gives byte-identical files. A 20 s dialogue takes a fraction of a second.

This is no substitute for real conversations (espeak's prosody is flat, the faces are
rule-based); it gives the training and evaluation code a corpus with exactly known structure.

Layout ("facebot-dyadic-1"), written by ``make_corpus`` and read by
``facebot.train.datasets.DyadicDataset``::

    root/
      manifest.json         {"format": "facebot-dyadic-1", "sample_rate": 24000, "fps": 25,
                             "seed": 0, "dialogues": [{"id", "duration_s", "n_frames"}, ...],
                             "splits": {"train": [ids], "val": [ids], "test": [ids]}}
      <id>/                 one dialogue (ids "d0000", "d0001", ...)
        a.wav, b.wav        each speaker's own voice track: mono, sample_rate, PCM 16-bit, same
                            length N; N is a whole number of 80 ms model frames
        a.npz, b.npz        each speaker's face at 25 fps, T = N * 25 / sample_rate frames
                            (even): the fields of ``FlameTrack.save_npz`` -- expression [T,50],
                            jaw_pose [T,3], neck_pose [T,3], eye_pose [T,6], eyelids [T,2],
                            stamp_ns [T] (frame k at k * 40 ms), sequence [T], source [T], fps
                            -- plus DualTalk's exp [T,50] and pose [T,6] (neck then jaw), plus
                            speaking [T] bool (own voice active at the frame time)
        meta.json           speakers (voice, rate, pitch, gain), turns (speaker, purpose
                            "turn" | "overlap" | "backchannel", start_s, end_s, text, words
                            with times), listener_cues (speaker, kind, time_s)

``FlameTrack.load_npz`` reads the ``.npz`` files (extra arrays are ignored). A turn's
``purpose`` is "overlap" when it starts before the previous turn ended. Times are seconds
from the start of the dialogue's audio, which is also the face timeline's origin.

``split_corpus`` (called by ``make_corpus``) assigns whole dialogues to train / val / test.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebot.io.atomic import atomic_write_bytes, atomic_write_text
from facebot.audio.files import write_wav
from facebot.audio.timing import PhonemeSpan, WordSpan
from facebot.face.cues import FaceCue
from facebot.face.flame import FPS, FlameTrack
from facebot.face.procedural import ProceduralFace
from facebot.config.face import ProceduralFaceConfig

__all__ = [
    "CORPUS_FORMAT",
    "SENTENCES",
    "BACKCHANNELS",
    "VOICES",
    "make_corpus",
    "make_dialogue",
    "split_corpus",
    "load_manifest",
]

CORPUS_FORMAT = "facebot-dyadic-1"
SPEAKERS = ("a", "b")
PHONEME_WINDOW_S = (-0.2, 0.4)  # phonemes given to a cue, relative to its start
# Lips lead the sound by 20 ms in the corpus faces (ProceduralFace's default is 40 ms); half a
# frame keeps the measured audio-to-jaw lag centred on zero within one frame.
LIP_ANTICIPATION_S = 0.02

SENTENCES: tuple[str, ...] = (
    "I went to the market this morning and the strawberries were already gone.",
    "Do you think it will rain before the weekend?",
    "My brother finally fixed the old bicycle in the garage.",
    "That sounds like a lot of work for one afternoon.",
    "We could take the early train and be there by lunch.",
    "Honestly, I never liked that song very much.",
    "The museum opens at nine, but the queue starts much earlier.",
    "She told me the recipe needs twice as much butter.",
    "Have you ever tried to teach a cat a new trick?",
    "The meeting moved to Thursday, so we have a little more time.",
    "I remember the first time we drove along the coast.",
    "Maybe we should ask someone who knows the area.",
    "Paper maps still work when the phone battery dies.",
    "Our neighbours are building a treehouse for their kids.",
    "It was cold, but the view from the bridge was worth it.",
    "Which one would you pick, the blue one or the green one?",
    "I read about a robot that can fold laundry.",
    "We ran out of coffee, which was a small disaster.",
    "The library has a quiet room upstairs where nobody talks.",
    "Please remind me to call the dentist tomorrow.",
    "Football practice was cancelled because of the storm.",
    "He plays the violin better than anyone I know.",
    "Let's keep it simple and order pizza tonight.",
    "I think the bakery on the corner closed last month.",
    "You should have seen the look on his face.",
    "Most of the photos came out blurry, unfortunately.",
    "Why do the buses always arrive in pairs?",
    "My grandmother grows tomatoes on her balcony.",
    "We watched the whole series in two evenings.",
    "The hardest part is getting started in the morning.",
    "If we leave now, we might still catch the sunset.",
    "Somebody left a box of books outside the door.",
    "I could barely hear the music over the wind.",
    "Those mountains look close, but they are far away.",
    "Could you pass me the map on the back seat?",
    "We planted four apple trees behind the house.",
    "Every summer the river gets a little lower.",
    "The puppy chewed through both of my shoes.",
    "I'm not sure, but it might be worth a try.",
    "What time does the last ferry leave the island?",
)
BACKCHANNELS: tuple[str, ...] = ("hmm", "uh huh", "yeah", "right", "okay", "I see", "sure")
# (espeak voice, base rate wpm, base pitch); a dialogue takes two distinct ones.
VOICES: tuple[tuple[str, int, int], ...] = (
    ("en-us+f5", 170, 60),
    ("en-us+m3", 160, 40),
    ("en-us+f2", 175, 65),
    ("en-us+m7", 165, 35),
    ("en-us+f4", 160, 55),
    ("en-us+m1", 170, 45),
)


@dataclass
class _Clip:
    """One utterance placed on the dialogue timeline (times in seconds, absolute)."""

    speaker: str
    purpose: str
    start_s: float
    audio: np.ndarray
    phonemes: list[PhonemeSpan]
    words: list
    text: str
    rate: int

    @property
    def end_s(self) -> float:
        return self.start_s + self.audio.shape[0] / self.rate


def _trimmed(voice, text: str, sample_rate: int) -> tuple:
    """espeak clip with the leading / trailing silence cut (phoneme and word times follow)."""
    clip = voice.synthesize(text, sample_rate)
    spoken = [p for p in clip.phonemes if not p.phoneme.startswith("_")]
    if not spoken:
        return clip.audio[:0], [], []
    lo = max(0.0, spoken[0].start_s - 0.02)
    hi = min(clip.duration_s, spoken[-1].end_s + 0.04)
    a, b = int(round(lo * sample_rate)), int(round(hi * sample_rate))
    audio = clip.audio[a:b].copy()
    phonemes = [p.shifted(-lo) for p in spoken if p.end_s > lo and p.start_s < hi]
    dur = (b - a) / sample_rate
    words = [WordSpan(w.text, max(0.0, w.start_s - lo), min(dur, max(0.0, w.end_s - lo)))
             for w in clip.words if w.end_s > lo and w.start_s < hi]
    return audio, phonemes, words


def _voiced_intervals(phonemes: list[PhonemeSpan], offset: float, merge_s: float = 0.05) -> list[list[float]]:
    out: list[list[float]] = []
    for p in phonemes:
        s, e = p.start_s + offset, p.end_s + offset
        if out and s - out[-1][1] <= merge_s:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def _active(intervals: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Whether any interval overlaps [t0, t1) for each element (vectorised over times)."""
    if intervals.size == 0:
        return np.zeros(t0.shape, bool)
    s, e = intervals[:, 0][None, :], intervals[:, 1][None, :]
    return ((s < t1[:, None]) & (e > t0[:, None])).any(axis=1)


def make_dialogue(seconds: float = 20.0, seed: int = 0, sample_rate: int = 24000) -> dict:
    """One dialogue in memory: ``{"audio": {a, b}, "tracks": {a, b}, "speaking": {a, b},
    "meta": {...}}``. ``make_corpus`` writes these; see the module docstring for contents."""
    from facebot.audio.espeak import EspeakVoice

    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate >= 8000 and (2 * sample_rate) % FPS == 0):
        raise ValueError(f"sample_rate must be an int >= 8000 divisible into 80 ms frames, got {sample_rate!r}")
    if not (math.isfinite(seconds) and seconds >= 2.0):
        raise ValueError(f"seconds must be >= 2.0, got {seconds!r}")
    rng = np.random.default_rng(seed)
    cue_n = 2 * sample_rate // FPS  # samples per 80 ms model frame
    n_cues = int(math.ceil(seconds * sample_rate / cue_n))
    n = n_cues * cue_n
    duration = n / sample_rate

    picks = rng.choice(len(VOICES), size=2, replace=False)
    speakers = {}
    voices = {}
    for spk, k in zip(SPEAKERS, picks):
        name, rate, pitch = VOICES[int(k)]
        rate = int(np.clip(rate + rng.integers(-15, 16), 80, 450))
        pitch = int(np.clip(pitch + rng.integers(-8, 9), 0, 100))
        gain = float(np.round(rng.uniform(0.7, 1.0), 3))
        speakers[spk] = {"voice": name, "rate_wpm": rate, "pitch": pitch, "gain": gain}
        voices[spk] = EspeakVoice(name, rate_wpm=rate, pitch=pitch)

    clips: list[_Clip] = []
    cues: list[dict] = []  # listener cues: user_pause (for the listener) and backchannels

    def place(spk, purpose, start, text):
        audio, ph, words = _trimmed(voices[spk], text, sample_rate)
        c = _Clip(spk, purpose, float(start), audio * speakers[spk]["gain"], ph, words, text, int(sample_rate))
        clips.append(c)
        return c

    order = list(rng.permutation(len(SENTENCES)))
    spk = SPEAKERS[int(rng.integers(2))]
    t = float(rng.uniform(0.2, 0.6))
    any_overlap = any_bc = False
    n_turns = 0
    prev_end = 0.0
    while t < duration - 1.0:
        other = "b" if spk == "a" else "a"
        n_sent = int(rng.choice([1, 2, 2, 3]))
        purpose = "turn"
        if n_turns and t < prev_end - 1e-6:
            purpose = "overlap"
        sentences = []
        for s in range(n_sent):
            if not order:
                order = list(rng.permutation(len(SENTENCES)))
            text = SENTENCES[order.pop()]
            c = place(spk, purpose if s == 0 else "turn", t, text)
            sentences.append(c)
            t = c.end_s
            if s + 1 < n_sent and t < duration - 1.0:
                gap = float(rng.uniform(0.4, 0.75))
                # the listener nods a moment into the pause ...
                cues.append({"speaker": other, "kind": "user_pause", "time_s": round(t + 0.12, 4)})
                # ... and often says something short
                if rng.random() < 0.7 or not any_bc:
                    any_bc = True
                    bc_t = t + float(rng.uniform(0.05, 0.15))
                    place(other, "backchannel", bc_t, BACKCHANNELS[int(rng.integers(len(BACKCHANNELS)))])
                    cues.append({"speaker": other, "kind": "backchannel", "time_s": round(bc_t, 4)})
                t += gap
            elif s + 1 < n_sent:
                break
        n_turns += 1
        prev_end = t
        last = sentences[-1]
        overlap = rng.random() < 0.35 or (not any_overlap and n_turns >= 2)
        if overlap:
            # the next speaker starts before this one is done, but not before mid-sentence
            ov = float(rng.uniform(0.25, 0.6))
            ov = min(ov, 0.5 * (last.end_s - last.start_s))
            t = prev_end - ov
            any_overlap = True
        else:
            t = prev_end + float(rng.uniform(0.2, 0.7))
        spk = other

    # Audio tracks and voiced intervals per speaker.
    audio = {s: np.zeros(n, np.float32) for s in SPEAKERS}
    intervals: dict[str, list] = {s: [] for s in SPEAKERS}
    phonemes: dict[str, list[PhonemeSpan]] = {s: [] for s in SPEAKERS}
    for c in clips:
        a = int(round(c.start_s * sample_rate))
        m = min(c.audio.shape[0], n - a)
        if m <= 0:
            continue
        audio[c.speaker][a:a + m] += c.audio[:m]
        phonemes[c.speaker].extend(p.shifted(c.start_s) for p in c.phonemes if p.start_s + c.start_s < duration)
        intervals[c.speaker].extend(_voiced_intervals(c.phonemes, c.start_s))
    for s in SPEAKERS:
        np.clip(audio[s], -1.0, 1.0, out=audio[s])
        phonemes[s].sort(key=lambda p: p.start_s)

    # Faces.
    n_frames = n_cues * 2
    frame_t = np.arange(n_frames) / FPS
    cue_t = np.arange(n_cues) * (2.0 / FPS)
    tracks, speaking = {}, {}
    for idx, s in enumerate(SPEAKERS):
        other = "b" if s == "a" else "a"
        own_iv = np.array(intervals[s], float).reshape(-1, 2)
        other_iv = np.array(intervals[other], float).reshape(-1, 2)
        own_active = _active(own_iv, cue_t, cue_t + 2.0 / FPS)
        other_active = _active(other_iv, cue_t, cue_t + 2.0 / FPS)
        pause_cues = np.zeros(n_cues, bool)
        bc_cues = np.zeros(n_cues, bool)
        for ev in cues:
            if ev["speaker"] != s:
                continue
            k = int(ev["time_s"] * FPS / 2)
            if 0 <= k < n_cues:
                (bc_cues if ev["kind"] == "backchannel" else pause_cues)[k] = True
        ph = phonemes[s]
        starts = np.array([p.start_s for p in ph])
        ends = np.array([p.end_s for p in ph])
        face = ProceduralFace(ProceduralFaceConfig(seed=int(seed) * 2 + idx + 1, anticipation_s=LIP_ANTICIPATION_S),
                              sample_rate=int(sample_rate))
        frames = []
        for k in range(n_cues):
            t0 = cue_t[k]
            if ph:
                sel = np.nonzero((ends >= t0 + PHONEME_WINDOW_S[0]) & (starts <= t0 + PHONEME_WINDOW_S[1]))[0]
                window = [ph[i].shifted(-t0) for i in sel]
            else:
                window = []
            cue = FaceCue(
                robot_audio=audio[s][k * cue_n:(k + 1) * cue_n],
                phonemes=window,
                robot_speaking=bool(own_active[k]),
                user_speaking=bool(other_active[k] and not own_active[k]),
                user_speech_prob=1.0 if other_active[k] else 0.0,
                user_pause=bool(pause_cues[k]),
                backchannel=bool(bc_cues[k]),
            )
            frames.extend(face.step(cue))
        track = FlameTrack.from_frames(frames)
        track.stamp_ns = np.arange(n_frames, dtype=np.int64) * (1_000_000_000 // FPS)
        track.sequence = np.arange(n_frames, dtype=np.int64)
        tracks[s] = track
        speaking[s] = _active(own_iv, frame_t, frame_t + 1e-9)

    turns = []
    for c in sorted(clips, key=lambda c: (c.start_s, c.speaker)):
        if c.start_s >= duration:
            continue
        turns.append({
            "speaker": c.speaker,
            "purpose": c.purpose,
            "start_s": round(c.start_s, 4),
            "end_s": round(min(c.end_s, duration), 4),
            "text": c.text,
            "words": [{"text": w.text, "start_s": round(w.start_s + c.start_s, 4),
                       "end_s": round(w.end_s + c.start_s, 4)} for w in c.words if w.start_s + c.start_s < duration],
        })
    meta = {
        "duration_s": duration,
        "sample_rate": int(sample_rate),
        "fps": FPS,
        "n_frames": n_frames,
        "seed": int(seed),
        "speakers": speakers,
        "turns": turns,
        "listener_cues": sorted((c for c in cues if c["time_s"] < duration), key=lambda c: (c["time_s"], c["speaker"])),
    }
    return {"audio": audio, "tracks": tracks, "speaking": speaking, "meta": meta}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-reproducible (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def _track_arrays(track: FlameTrack, speaking: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "expression": track.expression,
        "jaw_pose": track.jaw_pose,
        "neck_pose": track.neck_pose,
        "eye_pose": track.eye_pose,
        "eyelids": track.eyelids,
        "stamp_ns": track.stamp_ns,
        "sequence": track.sequence,
        "source": track.source,
        "fps": np.int64(track.fps),
    }
    arrays["exp"] = np.ascontiguousarray(track.expression[:, :50], np.float32)
    arrays["pose"] = np.concatenate([track.neck_pose, track.jaw_pose], axis=1).astype(np.float32)
    arrays["speaking"] = np.asarray(speaking, bool)
    return arrays


def _dump_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def load_manifest(root: str | Path) -> dict:
    p = Path(root) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no manifest (not a {CORPUS_FORMAT} corpus)")
    try:
        manifest = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if manifest.get("format") != CORPUS_FORMAT:
        raise ValueError(f"{p}: format {manifest.get('format')!r}, expected {CORPUS_FORMAT!r}")
    return manifest


def split_corpus(root: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> dict[str, list[str]]:
    """Assigns whole dialogues to train / val / test (seeded shuffle), writes the result into
    ``manifest.json`` under ``"splits"`` and returns it. Every split with a non-zero fraction
    gets at least one dialogue when there are enough dialogues."""
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or not np.isfinite(fr).all() or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}")
    fr = fr / fr.sum()
    root = Path(root)
    manifest = load_manifest(root)
    ids = [d["id"] for d in manifest["dialogues"]]
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    counts = np.floor(fr * len(ids)).astype(int)
    for i in np.argsort(-(fr * len(ids) - counts), kind="stable"):  # largest remainders first
        if counts.sum() < len(ids):
            counts[i] += 1
    for i in (1, 2, 0):  # make sure each wanted split has one dialogue, taking from the largest
        if fr[i] > 0 and counts[i] == 0 and len(ids) >= int((fr > 0).sum()):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    splits, k = {}, 0
    for name, c in zip(("train", "val", "test"), counts):
        splits[name] = sorted(perm[k:k + c])
        k += c
    manifest["splits"] = splits
    _dump_json(root / "manifest.json", manifest)
    return splits


def make_corpus(root: str | Path, n_dialogues: int, seconds_per_dialogue: float = 20.0, seed: int = 0,
                sample_rate: int = 24000, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict:
    """Writes ``n_dialogues`` synthetic dialogues under ``root`` (layout: module docstring)
    and returns the manifest. Dialogue ``i`` is seeded from ``SeedSequence([seed, i])`` (the
    derived seed is in its meta.json), so a corpus is the same
    whatever else is generated around it."""
    if not isinstance(n_dialogues, (int, np.integer)) or n_dialogues < 1:
        raise ValueError(f"n_dialogues must be a positive int, got {n_dialogues!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(int(n_dialogues)):
        did = f"d{i:04d}"
        d = make_dialogue(seconds_per_dialogue, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
                          sample_rate=sample_rate)
        out = root / did
        out.mkdir(exist_ok=True)
        for s in SPEAKERS:
            write_wav(out / f"{s}.wav", d["audio"][s], sample_rate)
            _write_npz(out / f"{s}.npz", _track_arrays(d["tracks"][s], d["speaking"][s]))
        meta = dict(d["meta"], id=did)
        _dump_json(out / "meta.json", meta)
        entries.append({"id": did, "duration_s": meta["duration_s"], "n_frames": meta["n_frames"]})
    manifest = {
        "format": CORPUS_FORMAT,
        "sample_rate": int(sample_rate),
        "fps": FPS,
        "seed": int(seed),
        "seconds_per_dialogue": float(seconds_per_dialogue),
        "dialogues": entries,
        "splits": {"train": [], "val": [], "test": []},
    }
    _dump_json(root / "manifest.json", manifest)
    manifest["splits"] = split_corpus(root, fractions, seed)
    return manifest
