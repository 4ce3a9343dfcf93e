"""FLAME frame contract: layouts and lossless conversions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from facebot.face.flame import CORE_DIM, FlameFrame, FlameTrack, FrameSource

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def random_frame(rng, n_exp=50, **meta):
    return FlameFrame(
        expression=rng.normal(size=n_exp), jaw_pose=rng.normal(size=3), neck_pose=rng.normal(size=3),
        eye_pose=rng.normal(size=6), eyelids=rng.uniform(size=2), **meta,
    )


@settings(max_examples=200)
@given(arrays(np.float32, CORE_DIM, elements=finite))
def test_core_round_trip_is_exact(core):
    frame = FlameFrame.from_core(core)
    assert np.array_equal(frame.to_core(), core)
    assert np.array_equal(frame.jaw_pose, core[50:53]) and np.array_equal(frame.neck_pose, core[53:56])


@settings(max_examples=100)
@given(st.integers(1, 40), st.integers(0, 2**31))
def test_dualtalk_round_trip_is_exact(t, seed):
    rng = np.random.default_rng(seed)
    exp = rng.normal(size=(t, 50)).astype(np.float32)
    pose = rng.normal(size=(t, 6)).astype(np.float32)
    track = FlameTrack.from_dualtalk(exp, pose)
    # DualTalk pose is neck then jaw; the core layout is jaw then neck.
    assert np.array_equal(track.neck_pose, pose[:, :3]) and np.array_equal(track.jaw_pose, pose[:, 3:])
    back = track.to_dualtalk()
    assert np.array_equal(back["exp"], exp) and np.array_equal(back["pose"], pose)
    core = track.to_core()
    assert np.array_equal(FlameTrack.from_core(core).to_core(), core)


def test_frames_track_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [random_frame(rng, stamp_ns=40_000_000 * i, sequence=i, source=FrameSource.PROCEDURAL) for i in range(7)]
    track = FlameTrack.from_frames(frames)
    track.save_npz(tmp_path / "t.npz")
    loaded = FlameTrack.load_npz(tmp_path / "t.npz")
    for a, b in zip(frames, loaded.frames()):
        for name in ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert (a.stamp_ns, a.sequence, a.source) == (b.stamp_ns, b.sequence, b.source)
    with np.load(tmp_path / "t.npz") as data:  # DualTalk arrays are there for other tools
        assert data["exp"].shape == (7, 50) and data["pose"].shape == (7, 6)


def test_dualtalk_npz_loads_as_track(tmp_path):
    np.savez(tmp_path / "spk.npz", exp=np.ones((5, 50), np.float32), pose=np.zeros((5, 6), np.float32))
    track = FlameTrack.load_npz(tmp_path / "spk.npz")
    assert len(track) == 5 and track.expression.sum() == 250


def test_shapes_are_validated():
    with pytest.raises(ValueError, match="jaw_pose must have 3"):
        FlameFrame(jaw_pose=[0, 0])
    with pytest.raises(ValueError, match="1..100"):
        FlameFrame(expression=np.zeros(101))
    with pytest.raises(ValueError, match=r"\[T, 56\]"):
        FlameTrack.from_core(np.zeros((3, 55)))


def test_up_to_100_expression_terms():
    frame = FlameFrame(expression=np.zeros(100))
    assert frame.to_core().shape == (56,)  # extra terms are zero: nothing is lost
    frame.expression[70] = 1.0
    with pytest.raises(ValueError, match="cannot hold"):
        frame.to_core()


def test_neutral_and_filler():
    f = FlameFrame.neutral()
    assert f.is_filler and f.is_finite() and not f.expression.any()
    f.expression[3] = np.nan
    assert not f.is_finite()
