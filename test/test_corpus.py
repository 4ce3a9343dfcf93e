"""Synthetic dyadic corpus: layout, determinism, turn structure, and face behaviour."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from facebot.face.flame import FlameTrack
from facebot.train.corpus import (
    CORPUS_FORMAT,
    load_manifest,
    make_corpus,
    make_dialogue,
    split_corpus,
)
from facebot.train.metrics import lip_sync

SECONDS = 20.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    t0 = time.perf_counter()
    manifest = make_corpus(root, 3, seconds_per_dialogue=SECONDS, seed=0)
    elapsed = time.perf_counter() - t0
    print(f"\n3 x {SECONDS:.0f} s dialogues generated in {elapsed:.2f} s ({elapsed / 3:.2f} s each)")
    return root, manifest


def _load(root, did):
    meta = json.loads((root / did / "meta.json").read_text())
    audio, tracks, speaking = {}, {}, {}
    for s in "ab":
        audio[s], sr = sf.read(str(root / did / f"{s}.wav"), dtype="float32")
        assert sr == 24000
        tracks[s] = FlameTrack.load_npz(root / did / f"{s}.npz")
        with np.load(root / did / f"{s}.npz") as z:
            speaking[s] = z["speaking"]
    return meta, audio, tracks, speaking


def test_layout_and_alignment(corpus):
    root, manifest = corpus
    assert load_manifest(root)["format"] == CORPUS_FORMAT
    assert [d["id"] for d in manifest["dialogues"]] == ["d0000", "d0001", "d0002"]
    for d in manifest["dialogues"]:
        meta, audio, tracks, speaking = _load(root, d["id"])
        n = audio["a"].shape[0]
        assert audio["a"].ndim == 1 and audio["b"].shape == (n,)
        assert n % 1920 == 0 and n >= SECONDS * 24000
        t = n // 960
        assert t % 2 == 0 and t == meta["n_frames"] == d["n_frames"]
        for s in "ab":
            tr = tracks[s]
            assert len(tr) == t and tr.expression.shape == (t, 50) and tr.eye_pose.shape == (t, 6)
            assert np.array_equal(tr.stamp_ns, np.arange(t) * 40_000_000)
            assert speaking[s].shape == (t,) and speaking[s].dtype == bool
            with np.load(root / d["id"] / f"{s}.npz") as z:  # DualTalk arrays agree with ours
                assert np.array_equal(z["exp"], tr.expression)
                assert np.array_equal(z["pose"], np.concatenate([tr.neck_pose, tr.jaw_pose], 1))
            # speaking marks where the voice is: loud frames are marked, quiet ones mostly not
            rms = np.sqrt((audio[s].reshape(t, 960) ** 2).mean(axis=1))
            assert speaking[s][rms > 0.05].mean() > 0.9
            assert speaking[s][rms < 1e-4].mean() < 0.1
        assert meta["speakers"]["a"]["voice"] != meta["speakers"]["b"]["voice"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    make_corpus(tmp_path / "x", 1, seconds_per_dialogue=8.0, seed=5)
    make_corpus(tmp_path / "y", 1, seconds_per_dialogue=8.0, seed=5)
    make_corpus(tmp_path / "z", 1, seconds_per_dialogue=8.0, seed=6)
    files = sorted(p.relative_to(tmp_path / "x") for p in (tmp_path / "x").rglob("*") if p.is_file())
    assert len(files) == 6  # manifest + meta + 2 wav + 2 npz
    for f in files:
        assert (tmp_path / "x" / f).read_bytes() == (tmp_path / "y" / f).read_bytes(), f
    assert (tmp_path / "x/d0000/a.wav").read_bytes() != (tmp_path / "z/d0000/a.wav").read_bytes()


def test_turns_overlap_and_backchannels(corpus):
    root, manifest = corpus
    for d in manifest["dialogues"]:
        meta = json.loads((root / d["id"] / "meta.json").read_text())
        turns = meta["turns"]
        purposes = {t["purpose"] for t in turns}
        assert {"turn", "overlap", "backchannel"} <= purposes
        assert {t["speaker"] for t in turns if t["purpose"] != "backchannel"} == {"a", "b"}
        main = [t for t in turns if t["purpose"] != "backchannel"]
        for prev, cur in zip(main, main[1:]):
            if cur["purpose"] == "overlap":
                assert cur["speaker"] != prev["speaker"]
                assert cur["start_s"] < prev["end_s"]  # really starts before the other ends
        for bc in (t for t in turns if t["purpose"] == "backchannel"):
            assert bc["text"] and bc["end_s"] - bc["start_s"] < 1.0
            others = [t for t in main if t["speaker"] != bc["speaker"]]
            # it sits in a pause of the other person: starts after one of their sentences ended
            assert any(0.0 <= bc["start_s"] - t["end_s"] <= 0.3 for t in others)
        for t in turns:
            assert t["words"] and all(t["start_s"] - 1e-3 <= w["start_s"] <= t["end_s"] for w in t["words"])


def test_speaking_faces_follow_own_voice_listeners_do_not(corpus):
    root, manifest = corpus
    pooled_audio, pooled_jaw = [], []
    for d in manifest["dialogues"]:
        _, audio, tracks, speaking = _load(root, d["id"])
        for s, o in (("a", "b"), ("b", "a")):
            corr, lag = lip_sync(audio[s], 24000, tracks[s].jaw_pose)
            corr_partner, _ = lip_sync(audio[o], 24000, tracks[s].jaw_pose)
            assert corr > 0.5, (d["id"], s, corr, lag)
            assert abs(lag) <= 0.1, (d["id"], s, corr, lag)  # per 20 s track: within 2.5 frames
            assert corr_partner < 0.0 < corr
            pooled_audio.append(audio[s])
            pooled_jaw.append(tracks[s].jaw_pose)
            # listening: the partner talks, self has not spoken for 0.2 s either side
            near_own = np.convolve(speaking[s].astype(float), np.ones(11), "same") > 0
            listening = speaking[o] & ~near_own
            assert listening.sum() > 50
            jaw = tracks[s].jaw_pose[:, 0]
            assert np.mean(jaw[listening] < 0.01) > 0.95
            assert jaw[speaking[s]].mean() > 0.05
    corr, lag = lip_sync(np.concatenate(pooled_audio), 24000, np.concatenate(pooled_jaw))
    assert corr > 0.5 and abs(lag) <= 0.04, (corr, lag)


def test_listeners_nod_and_blink(corpus):
    root, manifest = corpus
    n_nods = 0
    for d in manifest["dialogues"]:
        meta, _, tracks, _ = _load(root, d["id"])
        for cue in meta["listener_cues"]:
            if cue["kind"] != "user_pause":
                continue
            pitch = tracks[cue["speaker"]].neck_pose[:, 0]
            k = int(cue["time_s"] * 25)
            assert pitch[k:k + 16].max() - pitch[max(0, k - 2)] > 0.04  # chin dips within 0.64 s
            n_nods += 1
        for s in "ab":
            lids = tracks[s].eyelids[:, 0]
            closed = np.flatnonzero(lids > 0.8)
            assert closed.size and (np.diff(closed) > 1).sum() + 1 >= 2  # at least two blinks in 20 s
    assert n_nods >= 3


def test_splits(tmp_path):
    manifest = make_corpus(tmp_path, 5, seconds_per_dialogue=3.0, seed=1)
    splits = manifest["splits"]
    ids = sorted(d["id"] for d in manifest["dialogues"])
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == ids
    assert all(len(splits[k]) >= 1 for k in ("train", "val", "test"))
    again = split_corpus(tmp_path, (0.5, 0.0, 0.5), seed=3)
    assert again["val"] == [] and len(again["train"]) + len(again["test"]) == 5
    assert load_manifest(tmp_path)["splits"] == again
    with pytest.raises(ValueError, match="fractions"):
        split_corpus(tmp_path, (1.0, -1.0, 0.0))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_dialogues"):
        make_corpus(tmp_path, 0)
    with pytest.raises(ValueError, match="seconds"):
        make_dialogue(float("nan"))
    with pytest.raises(ValueError, match="sample_rate"):
        make_dialogue(5.0, sample_rate=1001)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path / "nowhere")


def test_other_sample_rate(tmp_path):
    d = make_dialogue(4.0, seed=2, sample_rate=16000)
    n = d["audio"]["a"].shape[0]
    assert n % 1280 == 0 and len(d["tracks"]["a"]) == n // 640
