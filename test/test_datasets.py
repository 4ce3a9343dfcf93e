"""DyadicDataset on our corpus layout and on a tiny synthetic folder in DualTalk's layout."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from facebot.face.flame import FlameTrack
from facebot.train.corpus import make_corpus
from facebot.train.datasets import DatasetError, DyadicDataset, detect_layout, dualtalk_pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, 3, seconds_per_dialogue=10.0, seed=3)
    return root


def _dualtalk_speaker(folder, name, t, seed, rate=16000, freq=None, n_audio=None, pose=None, exp=None):
    rng = np.random.default_rng(seed)
    exp = rng.normal(size=(t, 50)).astype(np.float32) if exp is None else exp
    pose = rng.normal(scale=0.1, size=(t, 6)).astype(np.float32) if pose is None else pose
    np.savez(folder / f"{name}.npz", exp=exp, pose=pose)
    n = int(round(t / 25 * rate)) if n_audio is None else n_audio
    tt = np.arange(n) / rate
    audio = 0.3 * np.sin(2 * np.pi * (freq or 200.0) * tt) if freq else rng.normal(scale=0.1, size=n)
    sf.write(str(folder / f"{name}.wav"), audio.astype(np.float32), rate, subtype="FLOAT")
    return exp, pose


@pytest.fixture()
def dualtalk(tmp_path):
    """Two conversations in test/, one in train/, named as the DualTalk release names them."""
    arrays = {}
    layout = (("train", ["abcDEF123_sub_video_7"]),
              ("test", ["UbjUDM1MiGE_sub_video_72", "xk_sub_video_109_000"]))
    for split, bases in layout:
        folder = tmp_path / split
        folder.mkdir()
        for j, base in enumerate(bases):
            t = 251 if j == 0 else 130  # odd on purpose: the dataset trims to whole model frames
            for k in (1, 2):
                arrays[(split, base, k)] = _dualtalk_speaker(folder, f"{base}_speaker{k}", t, seed=10 * j + k,
                                                             freq=300.0 * k)
    return tmp_path, arrays


def test_facebot_layout_shapes_and_alignment(corpus):
    ds = DyadicDataset(corpus, split="all", clip_s=4.0, hop_s=2.0)
    assert ds.layout == "facebot" and detect_layout(corpus) == "facebot"
    # 10 s dialogues = 250 frames (10.0 s rounds up to whole 80 ms frames: 250); clips at 0, 2, 4, 6 s
    assert all(d.n_frames == 250 for d in ds.dialogues)
    assert len(ds) == 3 * 2 * 4
    for i in (0, 5, len(ds) - 1):
        item = ds[i]
        t = item["face_self"].shape[0]
        assert t == 100 and t % 2 == 0
        assert item["audio_self"].shape == (t * 960,) and item["audio_self"].dtype == np.float32
        assert item["audio_partner"].shape == (t * 960,)
        assert item["face_self"].shape == (t, 56) and item["face_partner"].shape == (t, 56)
        assert item["face_self"].dtype == np.float32
        for who in ("self", "partner"):
            assert item[f"eye_pose_{who}"].shape == (t, 6)
            assert item[f"eyelids_{who}"].shape == (t, 2)
            assert item[f"speaking_{who}"].shape == (t,) and item[f"speaking_{who}"].dtype == bool

    # the clip is the right slice of the right files, for both points of view
    item = ds[6]  # dialogue 0: clips 0-3 from a's view, 4-7 from b's; 6 = b, start 4 s
    did, view = item["id"].split("/")
    assert view == "b" and item["start_s"] == 4.0
    other = "a"
    k0 = 100
    tb = FlameTrack.load_npz(corpus / did / "b.npz")
    ta = FlameTrack.load_npz(corpus / did / f"{other}.npz")
    assert np.array_equal(item["face_self"][:, :50], tb.expression[k0:k0 + 100])
    assert np.array_equal(item["face_self"][:, 50:53], tb.jaw_pose[k0:k0 + 100])
    assert np.array_equal(item["face_self"][:, 53:], tb.neck_pose[k0:k0 + 100])
    assert np.array_equal(item["face_partner"][:, 50:53], ta.jaw_pose[k0:k0 + 100])
    wav_b, _ = sf.read(str(corpus / did / "b.wav"), dtype="float32")
    assert np.array_equal(item["audio_self"], wav_b[k0 * 960:(k0 + 100) * 960])
    # speaking frames of a clip really carry that person's voice
    rms = np.sqrt((item["audio_self"].reshape(100, 960) ** 2).mean(axis=1))
    assert rms[item["speaking_self"]].mean() > 5 * rms[~item["speaking_self"]].mean()


def test_facebot_splits_and_short_dialogues(corpus):
    import json

    manifest = json.loads((corpus / "manifest.json").read_text())
    for split in ("train", "val", "test"):
        ds = DyadicDataset(corpus, split=split, clip_s=8.0, both_directions=False)
        assert sorted(d.id for d in ds.dialogues) == sorted(manifest["splits"][split])
    ds = DyadicDataset(corpus, split="all", clip_s=30.0)  # longer than a dialogue: one clip each
    assert len(ds) == 6 and ds[0]["face_self"].shape == (250, 56)
    with pytest.raises(DatasetError, match="no split 'dev'"):
        DyadicDataset(corpus, split="dev")


def test_dualtalk_layout_pairs_resampling_and_pose_order(dualtalk):
    root, arrays = dualtalk
    assert detect_layout(root, "test") == "dualtalk"
    assert [b for b, _, _ in dualtalk_pairs(root / "test")] == ["UbjUDM1MiGE_sub_video_72", "xk_sub_video_109_000"]
    ds = DyadicDataset(root, split="test", layout="auto", clip_s=4.0)
    assert ds.layout == "dualtalk"
    # 251 frames -> 250 usable -> two 100-frame clips; 130 -> one; each in both directions
    assert len(ds) == (2 + 1) * 2
    item = ds[0]
    assert item["id"] == "UbjUDM1MiGE_sub_video_72/a"
    assert item["face_self"].shape == (100, 56) and item["audio_self"].shape == (96000,)
    assert "speaking_self" not in item and "eye_pose_self" not in item
    exp, pose = arrays[("test", "UbjUDM1MiGE_sub_video_72", 1)]
    np.testing.assert_array_equal(item["face_self"][:, :50], exp[:100])
    np.testing.assert_array_equal(item["face_self"][:, 50:53], pose[:100, 3:])  # jaw = pose[3:6]
    np.testing.assert_array_equal(item["face_self"][:, 53:], pose[:100, :3])  # neck = pose[0:3]
    exp2, _ = arrays[("test", "UbjUDM1MiGE_sub_video_72", 2)]
    np.testing.assert_array_equal(item["face_partner"][:, :50], exp2[:100])
    # 16 kHz -> 24 kHz: the 300 Hz / 600 Hz tones keep their pitch and level
    for key, f0 in (("audio_self", 300.0), ("audio_partner", 600.0)):
        a = item[key]
        spec = np.abs(np.fft.rfft(a[2400:-2400] * np.hanning(a.size - 4800)))
        freqs = np.fft.rfftfreq(a.size - 4800, 1 / 24000)
        assert abs(freqs[np.argmax(spec)] - f0) < 2.0
        assert abs(np.sqrt(np.mean(a[2400:-2400] ** 2)) - 0.3 / np.sqrt(2)) < 0.01
    # the other point of view swaps the people
    item_b = ds[2]
    assert item_b["id"].endswith("/b")
    np.testing.assert_array_equal(item_b["face_self"], ds[0]["face_partner"])
    # the model rate can be anything divisible by 25 (here: keep 16 kHz)
    ds16 = DyadicDataset(root, split="train", clip_s=2.0, sample_rate=16000)
    assert ds16[0]["audio_self"].shape == (50 * 640,)
    with pytest.raises(DatasetError, match="no such split folder.*have: test, train"):
        DyadicDataset(root, split="ood", layout="dualtalk")


def test_dualtalk_validation_errors(tmp_path):
    def fresh(name):
        folder = tmp_path / name / "test"
        folder.mkdir(parents=True)
        return folder

    def expect(folder, pattern):
        with pytest.raises(DatasetError, match=pattern) as info:
            DyadicDataset(folder.parent, split="test", layout="dualtalk")
        assert "\n" not in str(info.value)

    f = fresh("missing_key")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    np.savez(f / "c_speaker2.npz", exp=np.zeros((50, 50), np.float32))
    sf.write(str(f / "c_speaker2.wav"), np.zeros(32000, np.float32), 16000)
    expect(f, r"c_speaker2.npz: missing 'pose'")

    f = fresh("bad_shape")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    _dualtalk_speaker(f, "c_speaker2", 50, 2, pose=np.zeros((50, 3), np.float32))
    expect(f, r"'pose' must be \[50, 6\]")

    f = fresh("bad_exp")
    _dualtalk_speaker(f, "c_speaker1", 50, 1, exp=np.zeros((50, 100), np.float32))
    _dualtalk_speaker(f, "c_speaker2", 50, 2)
    expect(f, r"'exp' must be \[T, 50\]")

    f = fresh("audio_length")
    _dualtalk_speaker(f, "c_speaker1", 50, 1, n_audio=16000)  # 1 s of audio for 2 s of face
    _dualtalk_speaker(f, "c_speaker2", 50, 2)
    expect(f, r"c_speaker1.npz: 50 face frames .* 1.00 s of audio")

    f = fresh("partner_length")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    _dualtalk_speaker(f, "c_speaker2", 80, 2)
    expect(f, r"partner c_speaker2.npz has 80")

    f = fresh("no_partner")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    _dualtalk_speaker(f, "d_speaker1", 50, 1)
    _dualtalk_speaker(f, "d_speaker2", 50, 1)
    expect(f, r"c_speaker1.npz: no partner file c_speaker2.npz")

    f = fresh("no_wav")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    _dualtalk_speaker(f, "c_speaker2", 50, 2)
    (f / "c_speaker2.wav").unlink()
    expect(f, r"c_speaker2.wav: no such audio file")

    f = fresh("stereo")
    _dualtalk_speaker(f, "c_speaker1", 50, 1)
    _dualtalk_speaker(f, "c_speaker2", 50, 2)
    sf.write(str(f / "c_speaker2.wav"), np.zeros((32000, 2), np.float32), 16000)
    expect(f, r"2 channels, expected mono")

    f = fresh("nan")
    bad = np.zeros((50, 50), np.float32)
    bad[3, 4] = np.nan
    _dualtalk_speaker(f, "c_speaker1", 50, 1, exp=bad)
    _dualtalk_speaker(f, "c_speaker2", 50, 2)
    expect(f, r"NaN")

    f = fresh("small_mismatch_ok")  # 1 frame of difference: trimmed, not an error
    _dualtalk_speaker(f, "c_speaker1", 51, 1)
    _dualtalk_speaker(f, "c_speaker2", 50, 2, n_audio=31500)
    ds = DyadicDataset(f.parent, split="test", clip_s=8.0)
    assert ds.dialogues[0].n_frames == 48  # min(51, 50, 49.2 frames of audio) -> 49 -> 48 (even)
    assert ds[0]["audio_partner"].shape == (48 * 960,)


def test_layout_detection_and_arguments(tmp_path, corpus):
    with pytest.raises(DatasetError, match="no manifest.json"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        DyadicDataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="layout must be"):
        DyadicDataset(corpus, layout="vocaset")
    with pytest.raises(DatasetError, match="sample_rate"):
        DyadicDataset(corpus, sample_rate=22051)
    with pytest.raises(DatasetError, match="clip_s"):
        DyadicDataset(corpus, clip_s=0.0)
    # our npz with a broken field
    did = "d0000"
    with np.load(corpus / did / "a.npz") as z:
        arrays = {k: z[k] for k in z.files}
    bad = tmp_path / "bad"
    (bad / did).mkdir(parents=True)
    for name in ("manifest.json", f"{did}/b.npz", f"{did}/a.wav", f"{did}/b.wav"):
        (bad / name).write_bytes((corpus / name).read_bytes())
    arrays["jaw_pose"] = arrays["jaw_pose"][:-3]
    np.savez(bad / did / "a.npz", **arrays)
    with pytest.raises(DatasetError, match=r"a.npz: 'jaw_pose' must be \[250, 3\]"):
        DyadicDataset(bad, split="all")
