"""Face metrics: parameter / vertex errors, perplexity, the DualTalk protocol, lip sync."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from facebot.face.flame import FlameTrack
from facebot.face.flame_mesh import FlameModel
from facebot.train import metrics as M

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_flame import synthetic_flame  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return FlameModel(synthetic_flame(n_lat=16, n_lon=20, eye_res=6))


def _track(t=120, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    core = np.zeros((t, 56), np.float32)
    core[:, :50] = rng.normal(scale=0.5 * scale, size=(t, 50))
    core[:, 50] = np.abs(rng.normal(scale=0.1 * scale, size=t))
    core[:, 53:] = rng.normal(scale=0.05 * scale, size=(t, 3))
    return core


# ---------------------------------------------------------------------- parameter space
def test_parameter_errors():
    gt = _track()
    assert M.mean_error(gt, gt) == 0.0 and M.lip_error(gt, gt) == 0.0
    pred = gt.copy()
    pred[:, 50] += 0.3  # jaw only: counts fully in both
    assert M.mean_error(pred, gt) == pytest.approx(0.3, abs=1e-6)
    assert M.lip_error(pred, gt) == pytest.approx(0.3, abs=1e-6)
    pred = gt.copy()
    pred[:, 20] += 1.0  # a non-mouth expression term: mean error only
    assert M.mean_error(pred, gt) == pytest.approx(1.0, abs=1e-6)
    assert M.lip_error(pred, gt) == pytest.approx(0.0, abs=1e-7)
    assert set(M.LIP_DIMS) == set(range(10)) | {50, 51, 52}
    assert M.lip_error(pred, gt, dims=[20]) == pytest.approx(1.0, abs=1e-6)
    # FlameTracks work too
    assert M.mean_error(FlameTrack.from_core(pred), FlameTrack.from_core(gt)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        M.mean_error(gt[:10], gt)
    with pytest.raises(ValueError, match=r"\[T, 56\]"):
        M.mean_error(gt[:, :50], gt[:, :50])
    bad = gt.copy()
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="pred contains NaN"):
        M.mean_error(bad, gt)


def test_vertex_errors(model):
    gt = _track(t=12)
    assert M.mean_vertex_error(gt, gt, model) == 0.0
    assert M.lip_vertex_error(gt, gt, model) == 0.0
    lips = M.lip_vertex_indices(model)
    assert 4 <= lips.size < model.n_vertices // 4
    # the heuristic lip region is at the front of the head, around the jaw joint's height
    v = model.v_template
    assert v[lips, 2].mean() > np.percentile(v[:, 2], 80)
    pred = gt.copy()
    pred[:, 50] += 0.15  # open the jaw more
    mve = M.mean_error(pred, gt, model)
    lve = M.lip_error(pred, gt, model)
    assert mve == pytest.approx(M.mean_vertex_error(pred, gt, model))
    assert 0 < mve < lve  # the lips move most; most of the head does not move at all
    # LVE is the per-frame maximum over the given lip vertices, averaged
    verts_p = np.stack([model.vertices(expression=c[:50], jaw_pose=c[50:53], neck_pose=c[53:]) for c in pred])
    verts_g = np.stack([model.vertices(expression=c[:50], jaw_pose=c[50:53], neck_pose=c[53:]) for c in gt])
    d = np.linalg.norm(verts_p - verts_g, axis=2)
    assert lve == pytest.approx(d[:, lips].max(axis=1).mean())
    assert mve == pytest.approx(d.mean())
    assert M.lip_vertex_error(pred, gt, model, lip_vertices=[0, 1]) == pytest.approx(d[:, [0, 1]].max(axis=1).mean())
    assert M.mean_vertex_error(pred, gt, model, squared=True) == pytest.approx((d ** 2).mean())
    # a neck-only change vanishes with with_neck=False
    nod = gt.copy()
    nod[:, 53] += 0.1
    assert M.mean_vertex_error(nod, gt, model) > 0
    assert M.mean_vertex_error(nod, gt, model, with_neck=False) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lip_vertices"):
        M.lip_vertex_error(pred, gt, model, lip_vertices=[10 ** 6])


def test_vertex_errors_from_model_file(tmp_path):
    path = tmp_path / "flame.npz"
    np.savez(path, **synthetic_flame(n_lat=10, n_lon=12, eye_res=4))
    gt = _track(t=4)
    pred = gt + 0.01
    assert M.mean_error(pred, gt, str(path)) > 0


# ----------------------------------------------------------------------------- codebooks
def test_normalized_perplexity_bounds():
    K = 16
    assert M.normalized_perplexity(np.arange(K).repeat(5), K) == pytest.approx(1.0)
    assert M.normalized_perplexity(np.full(100, 3), K) == pytest.approx(1.0 / K)
    half = M.normalized_perplexity(np.arange(K // 2).repeat(3), K)
    assert half == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    skewed = rng.choice(K, size=5000, p=np.linspace(1, 10, K) / np.linspace(1, 10, K).sum())
    assert 1.0 / K < M.normalized_perplexity(skewed, K) < 1.0
    # per codebook: [T, N] with one uniform and one collapsed codebook -> mean of 1 and 1/K
    codes = np.stack([np.arange(64) % K, np.zeros(64, int)], axis=1)
    assert M.normalized_perplexity(codes, K, axis=-1) == pytest.approx((1 + 1 / K) / 2)
    with pytest.raises(ValueError, match=r"lie in \[0, 16\)"):
        M.normalized_perplexity([0, 16], K)
    with pytest.raises(ValueError, match="empty"):
        M.normalized_perplexity([], K)
    with pytest.raises(ValueError, match="integers"):
        M.normalized_perplexity([0.5], K)


# ----------------------------------------------------------------------------- DualTalk
def test_fd_zero_for_identical_and_grows_with_shift():
    x = _track(t=400)[:, :50]
    assert M.fd(x, x) == pytest.approx(0.0, abs=1e-6)
    shifts = [M.fd(x + s, x) for s in (0.1, 0.3, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]
    # a pure mean shift by s in every one of D dims costs D * s^2
    assert shifts[2] == pytest.approx(50 * 1.0, rel=1e-5)
    # scaling changes the covariance part: FD of N(0, a^2 I) vs N(0, I) is D (a - 1)^2
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200000, 3))
    assert M.fd(2 * z, z) == pytest.approx(3.0, rel=0.02)
    # singular covariances (a jaw that never rolls) stay finite and real
    jaw = np.zeros((100, 3))
    jaw[:, 0] = np.abs(rng.normal(size=100))
    assert M.fd(jaw, jaw) == pytest.approx(0.0, abs=1e-9)
    assert M.fd(jaw + [0.1, 0, 0], jaw) == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        M.fd(x[:1], x)


def test_p_fd_mse_rpcc():
    gt, partner = _track(t=300, seed=1), _track(t=300, seed=2)
    for name, sl in M.GROUPS.items():
        assert M.p_fd(gt[:, sl], gt[:, sl], partner[:, sl]) == pytest.approx(0.0, abs=1e-6)
        assert M.rpcc(gt[:, sl], gt[:, sl], partner[:, sl]) == 0.0
        assert M.rpcc(gt[:, sl], gt[:, sl], partner[:, sl], mode="per_dim") == 0.0
    assert M.p_fd(gt + 0.5, gt, partner) > 0
    assert M.mse(gt + 0.5, gt) == pytest.approx(0.25, rel=1e-5)
    # rPCC: pred that copies the partner correlates perfectly where gt does not
    t = np.linspace(0, 20, 500)
    partner1 = np.sin(t)[:, None]
    gt1 = 0.5 * np.sin(t)[:, None] + np.cos(3 * t)[:, None]
    r_gt = np.corrcoef(gt1[:, 0], partner1[:, 0])[0, 1]
    assert M.rpcc(partner1, gt1, partner1) == pytest.approx(1.0 - r_gt)
    assert M.pcc(np.zeros((5, 2)), np.ones((5, 2))) == 0.0  # constant: undefined -> 0
    with pytest.raises(ValueError, match="partner"):
        M.p_fd(gt, gt, partner[:10])


def test_sid_uniform_is_log2_k_and_collapsed_is_zero():
    rng = np.random.default_rng(0)
    k = 10
    centres = rng.normal(scale=10.0, size=(k, 3))
    gt = np.concatenate([c + rng.normal(scale=0.05, size=(30, 3)) for c in centres])
    pred_uniform = np.concatenate([c + rng.normal(scale=0.05, size=(7, 3)) for c in centres])
    assert M.sid(pred_uniform, gt, k) == pytest.approx(math.log2(k), abs=1e-9)
    pred_one = centres[3] + rng.normal(scale=0.05, size=(50, 3))
    assert M.sid(pred_one, gt, k) == pytest.approx(0.0, abs=1e-12)
    # two used clusters equally -> 1 bit
    pred_two = np.concatenate([centres[0] + 0 * pred_one[:20], centres[5] + 0 * pred_one[:20]])
    assert M.sid(pred_two, gt, k) == pytest.approx(1.0)
    # fit_on="pred" (the release's argument order) histograms gt on clusters of pred
    assert M.sid(gt, pred_uniform, k, fit_on="pred") == pytest.approx(math.log2(k), abs=1e-9)
    # deterministic for a seed; fewer distinct frames than k is handled
    assert M.sid(pred_uniform, gt, 40, seed=4) == M.sid(pred_uniform, gt, 40, seed=4)
    assert M.sid(np.zeros((5, 3)), np.zeros((5, 3)), 10) == 0.0
    with pytest.raises(ValueError, match="fit_on"):
        M.sid(gt, gt, 3, fit_on="both")


def test_dualtalk_table():
    gt, partner = _track(t=200, seed=1), _track(t=200, seed=2)
    table = M.dualtalk_table(gt, gt, partner)
    assert set(table) == {f"{m}_{g}" for m in ("fd", "p_fd", "mse", "sid", "rpcc") for g in ("exp", "jaw", "pose")}
    for g in ("exp", "jaw", "pose"):
        assert table[f"fd_{g}"] == pytest.approx(0.0, abs=1e-6)
        assert table[f"p_fd_{g}"] == pytest.approx(0.0, abs=1e-6)
        assert table[f"mse_{g}"] == 0.0 and table[f"rpcc_{g}"] == 0.0
        assert 0 < table[f"sid_{g}"] <= math.log2(M.SID_K[g])
    noisy = gt + np.random.default_rng(3).normal(scale=0.2, size=gt.shape).astype(np.float32)
    worse = M.dualtalk_table(noisy, gt, partner)
    assert all(worse[f"{m}_exp"] > table[f"{m}_exp"] for m in ("fd", "p_fd", "mse"))
    # lists of sequences: per-sequence metrics averaged
    both = M.dualtalk_table([gt, noisy], [gt, gt], [partner, partner])
    assert both["mse_exp"] == pytest.approx((table["mse_exp"] + worse["mse_exp"]) / 2)
    with pytest.raises(ValueError, match="equally long"):
        M.dualtalk_table([gt], [gt, gt], [partner])
    bad = gt.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="gt contains NaN or inf"):
        M.dualtalk_table(gt, bad, partner)


# ----------------------------------------------------------------------------- lip sync
def _speechlike(seconds=12.0, sr=24000, seed=0):
    """Noise bursts (syllables) of random length and loudness, and the matching jaw opening."""
    rng = np.random.default_rng(seed)
    n_frames = int(seconds * 25)
    jaw = np.zeros(n_frames)
    k = 0
    while k < n_frames:
        length = int(rng.integers(2, 8))
        jaw[k:k + length] = rng.uniform(0.05, 0.3) if rng.random() < 0.6 else 0.0
        k += length
    env = np.repeat(jaw, sr // 25)
    audio = (rng.normal(size=env.size) * env).astype(np.float32)
    return audio, jaw


@pytest.mark.parametrize("lag_frames", [-3, 0, 2, 4])
def test_lip_sync_recovers_a_planted_lag(lag_frames):
    audio, jaw = _speechlike()
    shifted = np.roll(jaw, lag_frames)  # positive: the jaw moves after the audio
    corr, lag = M.lip_sync(audio, 24000, shifted)
    assert corr > 0.8
    assert abs(lag - lag_frames / 25) <= 1 / 25
    # [T, 3] jaw poses and [T, 56] core tracks read the same channel
    jaw3 = np.zeros((jaw.size, 3))
    jaw3[:, 0] = shifted
    assert M.lip_sync(audio, 24000, jaw3) == pytest.approx((corr, lag))
    core = np.zeros((jaw.size, 56))
    core[:, 50] = shifted
    assert M.lip_sync(audio, 24000, core) == pytest.approx((corr, lag))


def test_lip_sync_edge_cases():
    audio, jaw = _speechlike(seconds=2.0)
    assert M.lip_sync(audio, 24000, np.zeros_like(jaw)) == (0.0, 0.0)  # closed jaw: no evidence
    assert M.lip_sync(np.zeros_like(audio), 24000, jaw) == (0.0, 0.0)  # silence
    corr, lag = M.lip_sync(audio[:4800], 24000, jaw[:5])  # tiny: lags clamp to what fits
    assert -1 <= corr <= 1 and abs(lag) <= 0.08
    with pytest.raises(ValueError, match="at least 4 frames"):
        M.lip_sync(audio[:1000], 24000, jaw)
    bad = jaw.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="jaw contains NaN"):
        M.lip_sync(audio, 24000, bad)
    with pytest.raises(ValueError, match="mono"):
        M.lip_sync(np.stack([audio, audio], 1), 24000, jaw)
