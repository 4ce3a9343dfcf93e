"""Dyadic talking-face datasets: our corpus layout and the DualTalk release's layout.

``DyadicDataset(root, split)`` yields fixed-length clips of a two-person conversation from
one person's point of view ("self") with the other person as "partner"; every dialogue gives
clips for both points of view. Each item is a dict:

=================== =========== ==============================================================
key                 shape       meaning
=================== =========== ==============================================================
audio_self          [N] float32 self's own voice track at ``sample_rate`` (24 kHz default)
audio_partner       [N] float32 the partner's voice track
face_self           [T, 56] f32 self's FLAME core ``[exp(50), jaw(3), neck(3)]`` at 25 fps
face_partner        [T, 56] f32 the partner's
eye_pose_self ...   [T, 6]      extras, when the layout has them (ours does, DualTalk not):
eyelids_self ...    [T, 2]      ``eye_pose_*``, ``eyelids_*``, ``speaking_*`` (bool) for
speaking_self ...   [T] bool    ``_self`` and ``_partner``
present_self ...    [T] bool    a face was seen in that frame (an npz ``present`` array, e.g.
                                a perceived track); absent: every frame has a face
id                  str         dialogue id, plus ``"/a"`` or ``"/b"`` for the point of view
start_s             float       clip start in the dialogue
=================== =========== ==============================================================

Alignment: face frame ``k`` is at ``start_s + k / 25`` and covers audio samples
``[k * N / T, (k + 1) * N / T)``; ``T`` is even, so two face frames make one 80 ms model frame
(12.5 Hz) and ``N = T * sample_rate / 25`` (960 samples per face frame at 24 kHz, 1920 per
model frame). Clips are ``clip_s`` long (rounded down to whole model frames) and start every
``hop_s`` (default ``clip_s``); a dialogue shorter than one clip gives one clip of its own
(even) length. Audio at another rate is resampled with soxr (HQ).

Layouts (``layout="auto"`` picks ``facebot`` when ``root/manifest.json`` exists, else
``dualtalk`` when ``root/<split>/`` holds ``*_speaker1.npz`` files):

* ``facebot``: written by ``facebot.train.corpus.make_corpus`` (see its docstring):
  ``root/manifest.json`` (with ``splits``), ``root/<id>/{a,b}.{wav,npz}``. ``split="all"``
  takes every dialogue.
* ``dualtalk``: the DualTalk release (github.com/ZiqiaoPeng/DualTalk, README "Dataset" and
  ``dataset_train.py``; data on Hugging Face ``ZiqiaoPeng/DualTalk_Dataset``): flat split
  folders ``root/train/``, ``root/test/``, ``root/ood/`` holding ``<name>.npz`` +
  ``<name>.wav`` per speaker, where the two people of one conversation are
  ``<base>_speaker1`` and ``<base>_speaker2`` (e.g. ``UbjUDM1MiGE_sub_video_72_speaker1``).
  Each ``.npz`` has ``exp [T, 50]`` and ``pose [T, 6]`` = neck axis-angle then jaw
  axis-angle, 25 fps; the release loads the audio at 16 kHz. A ``_speaker1`` file without
  its ``_speaker2`` partner (or the reverse) is an error, as are missing ``.wav`` files.

Validation: every problem is a ``DatasetError`` (a ``ValueError``) with one line naming the
file: missing keys, wrong shapes, NaN / inf, stereo audio, face tracks of the two people or
face vs audio differing by more than ``max_mismatch_s`` (default 0.1 s; smaller differences,
common in real recordings, are cut to the shorter). Nothing is padded or skipped silently.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebot.face.flame import FPS, N_EXPRESSION
from facebot.errors import FacebotError

__all__ = ["DatasetError", "DyadicDataset", "detect_layout", "dualtalk_pairs", "DUALTALK_SPLITS"]

DUALTALK_SPLITS = ("train", "test", "ood")
_FRAMES_PER_MODEL_FRAME = 2


class DatasetError(FacebotError, ValueError):
    """A dataset file or folder that cannot be used; ``str()`` is one line naming it."""


@dataclass
class _Person:
    npz: Path
    wav: Path


@dataclass
class _Dialogue:
    id: str
    people: tuple[_Person, _Person]
    n_frames: int  # usable (aligned) face frames, even


def detect_layout(root: str | Path, split: str = "train") -> str:
    root = Path(root)
    if (root / "manifest.json").is_file():
        return "facebot"
    if (root / split).is_dir() and any((root / split).glob("*_speaker1.npz")):
        return "dualtalk"
    raise DatasetError(
        f"{root}: no manifest.json (facebot layout) and no {split}/*_speaker1.npz (DualTalk layout)"
    )


def dualtalk_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """``(base, speaker1.npz, speaker2.npz)`` for every conversation in a DualTalk split folder."""
    folder = Path(folder)
    ones = {p.name[: -len("_speaker1.npz")]: p for p in folder.glob("*_speaker1.npz")}
    twos = {p.name[: -len("_speaker2.npz")]: p for p in folder.glob("*_speaker2.npz")}
    for base in sorted(set(ones) ^ set(twos)):
        have = "speaker1" if base in ones else "speaker2"
        want = "speaker2" if base in ones else "speaker1"
        raise DatasetError(f"{folder / (base + '_' + have + '.npz')}: no partner file {base}_{want}.npz")
    return [(b, ones[b], twos[b]) for b in sorted(ones)]


def _read_face(path: Path) -> dict[str, np.ndarray]:
    """``core [T,56]`` float32 plus extras, from either layout's ``.npz``."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable .npz ({str(err).splitlines()[0] if str(err) else err})") from None
    with data:
        keys = set(data.files)
        out: dict[str, np.ndarray] = {}
        if {"expression", "jaw_pose", "neck_pose"} <= keys:
            exp = data["expression"]
            if exp.ndim != 2 or exp.shape[1] < N_EXPRESSION:
                raise DatasetError(f"{path}: 'expression' must be [T, >=50], got {list(exp.shape)}")
            t = exp.shape[0]
            if exp.shape[1] > N_EXPRESSION and np.any(exp[:, N_EXPRESSION:] != 0):
                raise DatasetError(f"{path}: 'expression' has non-zero terms past 50; the 56-dim core cannot hold them")
            parts = [exp[:, :N_EXPRESSION]]
            for name in ("jaw_pose", "neck_pose"):
                a = data[name]
                if a.shape != (t, 3):
                    raise DatasetError(f"{path}: '{name}' must be [{t}, 3], got {list(a.shape)}")
                parts.append(a)
            core = np.concatenate(parts, axis=1)
            for name, width in (("eye_pose", 6), ("eyelids", 2)):
                if name in keys:
                    a = data[name]
                    if a.shape != (t, width):
                        raise DatasetError(f"{path}: '{name}' must be [{t}, {width}], got {list(a.shape)}")
                    out[name] = a.astype(np.float32)
            for name in ("speaking", "present"):
                if name in keys:
                    a = data[name]
                    if a.shape != (t,):
                        raise DatasetError(f"{path}: '{name}' must be [{t}], got {list(a.shape)}")
                    out[name] = a.astype(bool)
        elif {"exp", "pose"} <= keys:
            exp, pose = data["exp"], data["pose"]
            if exp.ndim != 2 or exp.shape[1] != N_EXPRESSION:
                raise DatasetError(f"{path}: 'exp' must be [T, 50], got {list(exp.shape)}")
            if pose.shape != (exp.shape[0], 6):
                raise DatasetError(f"{path}: 'pose' must be [{exp.shape[0]}, 6] (neck, jaw), got {list(pose.shape)}")
            core = np.concatenate([exp, pose[:, 3:6], pose[:, 0:3]], axis=1)  # exp, jaw, neck
        else:
            missing = "'exp' and 'pose'" if not ({"exp", "pose"} & keys) else (
                "'pose'" if "exp" in keys else "'exp'")
            raise DatasetError(f"{path}: missing {missing} (and no facebot 'expression'/'jaw_pose'/'neck_pose')")
    core = np.asarray(core, np.float32)
    if not np.isfinite(core).all() or any(not np.isfinite(v).all() for k, v in out.items() if v.dtype != bool):
        raise DatasetError(f"{path}: contains NaN or inf")
    if core.shape[0] < _FRAMES_PER_MODEL_FRAME:
        raise DatasetError(f"{path}: only {core.shape[0]} face frames")
    out["core"] = core
    return out


def _wav_info(path: Path) -> tuple[int, int]:
    import soundfile as sf

    if not path.is_file():
        raise DatasetError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile's errors vary by version
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"{path}: not a readable audio file ({reason})") from None
    if info.channels != 1:
        raise DatasetError(f"{path}: {info.channels} channels, expected mono (one voice per file)")
    return int(info.samplerate), int(info.frames)


def _read_wav(path: Path, rate: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if data.shape[1] != 1:
        raise DatasetError(f"{path}: {data.shape[1]} channels, expected mono")
    a = data[:, 0]
    if not np.isfinite(a).all():
        raise DatasetError(f"{path}: contains NaN or inf samples")
    if sr != rate:
        a = soxr.resample(a, sr, rate, quality="HQ").astype(np.float32)
    return a


class DyadicDataset:
    """Clips of dyadic conversations (module docstring). ``len()`` and ``[i]``; iterable.

    Works as a ``torch.utils.data.Dataset`` (it only needs ``__len__`` / ``__getitem__``); the
    arrays are numpy. The last dialogue read is cached, so reading clips in order is cheap.
    """

    def __init__(self, root: str | Path, split: str = "train", layout: str = "auto", clip_s: float = 8.0,
                 hop_s: float | None = None, sample_rate: int = 24000, max_mismatch_s: float = 0.1,
                 both_directions: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder")
        if layout not in ("auto", "facebot", "dualtalk"):
            raise DatasetError(f"layout must be 'auto', 'facebot' or 'dualtalk', got {layout!r}")
        if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0 and sample_rate % FPS == 0):
            raise DatasetError(f"sample_rate must be a positive multiple of {FPS} Hz, got {sample_rate!r}")
        if not (math.isfinite(clip_s) and clip_s > 0):
            raise DatasetError(f"clip_s must be > 0, got {clip_s!r}")
        hop_s = clip_s if hop_s is None else hop_s
        if not (math.isfinite(hop_s) and hop_s > 0):
            raise DatasetError(f"hop_s must be > 0, got {hop_s!r}")
        self.layout = detect_layout(self.root, split) if layout == "auto" else layout
        self.split = split
        self.sample_rate = int(sample_rate)
        self.samples_per_frame = self.sample_rate // FPS
        self.clip_frames = max(_FRAMES_PER_MODEL_FRAME,
                               int(clip_s * FPS) // _FRAMES_PER_MODEL_FRAME * _FRAMES_PER_MODEL_FRAME)
        self.hop_frames = max(1, int(round(hop_s * FPS)))
        self.max_mismatch_s = float(max_mismatch_s)
        self.both_directions = bool(both_directions)
        self.dialogues = self._facebot_dialogues() if self.layout == "facebot" else self._dualtalk_dialogues()
        self._index: list[tuple[int, int, int, int]] = []  # (dialogue, view, start frame, frames)
        for di, d in enumerate(self.dialogues):
            starts = list(range(0, d.n_frames - self.clip_frames + 1, self.hop_frames))
            spans = [(s, self.clip_frames) for s in starts] or [(0, d.n_frames)]
            for view in ((0, 1) if self.both_directions else (0,)):
                self._index.extend((di, view, s, n) for s, n in spans)
        self._cache: tuple[int, list] | None = None

    # ------------------------------------------------------------------------ discovery
    def _facebot_dialogues(self) -> list[_Dialogue]:
        mpath = self.root / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{mpath}: unreadable manifest ({err})") from None
        ids = [d.get("id") for d in manifest.get("dialogues", [])]
        if self.split != "all":
            splits = manifest.get("splits", {})
            if self.split not in splits:
                raise DatasetError(f"{mpath}: no split {self.split!r} (have: {', '.join(sorted(splits)) or 'none'})")
            ids = list(splits[self.split])
        out = []
        for did in ids:
            folder = self.root / str(did)
            people = tuple(_Person(folder / f"{s}.npz", folder / f"{s}.wav") for s in ("a", "b"))
            out.append(self._check(str(did), people))
        return out

    def _dualtalk_dialogues(self) -> list[_Dialogue]:
        folder = self.root / self.split
        if not folder.is_dir():
            have = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DatasetError(f"{folder}: no such split folder (have: {', '.join(have) or 'none'})")
        out = []
        for base, one, two in dualtalk_pairs(folder):
            people = (_Person(one, one.with_suffix(".wav")), _Person(two, two.with_suffix(".wav")))
            out.append(self._check(base, people))
        return out

    def _check(self, did: str, people) -> _Dialogue:
        """Validates shapes and lengths up front (reads the faces, only the audio headers)."""
        frames = []
        for p in people:
            if not p.npz.is_file():
                raise DatasetError(f"{p.npz}: no such face file")
            face = _read_face(p.npz)
            rate, n = _wav_info(p.wav)
            t_face = face["core"].shape[0]
            t_audio = n * FPS / rate
            if abs(t_face - t_audio) > self.max_mismatch_s * FPS:
                raise DatasetError(
                    f"{p.npz}: {t_face} face frames ({t_face / FPS:.2f} s) but {p.wav.name} has "
                    f"{n / rate:.2f} s of audio (mismatch > {self.max_mismatch_s} s)"
                )
            frames.append(min(t_face, int(t_audio)))
        if abs(frames[0] - frames[1]) > self.max_mismatch_s * FPS:
            raise DatasetError(
                f"{people[0].npz}: {frames[0]} frames but its partner {people[1].npz.name} has {frames[1]} "
                f"(mismatch > {self.max_mismatch_s} s)"
            )
        t = min(frames) // _FRAMES_PER_MODEL_FRAME * _FRAMES_PER_MODEL_FRAME
        if t < _FRAMES_PER_MODEL_FRAME:
            raise DatasetError(f"{people[0].npz}: too short ({t} usable face frames)")
        return _Dialogue(did, tuple(people), t)

    # ---------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._index)

    def _load(self, di: int) -> list[dict]:
        if self._cache is not None and self._cache[0] == di:
            return self._cache[1]
        d = self.dialogues[di]
        n = d.n_frames * self.samples_per_frame
        people = []
        for p in d.people:
            face = _read_face(p.npz)
            audio = _read_wav(p.wav, self.sample_rate)
            if audio.shape[0] < n:  # within the tolerance checked at start-up
                audio = np.pad(audio, (0, n - audio.shape[0]))
            people.append({"audio": audio[:n], **{k: v[:d.n_frames] for k, v in face.items()}})
        self._cache = (di, people)
        return people

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range ({len(self)} clips)")
        di, view, start, frames = self._index[i]
        people = self._load(di)
        me, other = people[view], people[1 - view]
        a0, a1 = start * self.samples_per_frame, (start + frames) * self.samples_per_frame
        item = {
            "id": f"{self.dialogues[di].id}/{'ab'[view]}",
            "start_s": start / FPS,
            "audio_self": me["audio"][a0:a1].copy(),
            "audio_partner": other["audio"][a0:a1].copy(),
            "face_self": me["core"][start:start + frames].copy(),
            "face_partner": other["core"][start:start + frames].copy(),
        }
        for key in ("eye_pose", "eyelids", "speaking", "present"):
            for who, person in (("self", me), ("partner", other)):
                if key in person:
                    item[f"{key}_{who}"] = person[key][start:start + frames].copy()
        return item

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
