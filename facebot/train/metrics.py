"""Face metrics: reconstruction error, codebook use, the DualTalk protocol, and lip sync.

All functions take face tracks as ``[T, 56]`` arrays in the core layout
``[expression(50), jaw(3), neck(3)]`` (``facebot.face.flame``) or as ``FlameTrack``; they use
numpy / scipy only and raise ``ValueError`` with a one-line message for NaN / inf, wrong
shapes, mismatched lengths and inputs too short for the statistic.

**Reconstruction error** (codec and model evaluation, Moshi-Face's table):

* Parameter space. ``mean_error`` = mean over frames of the L2 norm of the 56-dim difference;
  ``lip_error`` = the same over the lip dimensions ``LIP_DIMS`` only. The lip region in
  parameter space is the jaw rotation (dims 50-52) plus expression components 0-9: facebot's
  control basis puts every mouth control (jaw opening, lip press / round / funnel / stretch /
  tuck, smile) on components 0-10 (``facebot.face.controls``), and in FLAME's expression PCA
  the leading components carry most of the mouth's variance. Component 10 (smile cross-term)
  is left out so the region stays mouth-only; pass ``dims=`` for another choice.
* Vertex space, with a FLAME model (``FlameModel`` or the path of its converted ``.npz``):
  MVE = mean over frames and vertices of the per-vertex L2 distance; LVE = per frame the
  **largest** L2 distance over the lip vertices, averaged over frames (FaceFormer's
  definition, which Moshi-Face reports). Units are the model's (metres for FLAME); FaceFormer's
  code reports the squared distance, ``squared=True`` gives that. Vertices come from the full
  core vector (neck included); ``with_neck=False`` zeroes the neck in both, which isolates
  face deformation. Lip vertices: give them (e.g. the "lips" region of FLAME's
  ``FLAME_masks.pkl``), or ``lip_vertex_indices`` picks them by a heuristic: the vertices on
  the jaw / head skinning boundary (jaw weight strictly between 0.02 and 0.98) within 2 cm of
  the front-most such vertex, which on FLAME is where the lips meet; if fewer than 4 qualify,
  the 5 % of front-half vertices that move most when the jaw opens 0.2 rad. Not validated on
  the real FLAME mesh here (it is not on these machines).

**Codebook use**: ``normalized_perplexity(codes, K)`` = exp(H) / K with H the entropy (nats)
of the code histogram; 1 = all K codes used equally, 1/K = one code.

**DualTalk protocol** (Peng et al., CVPR 2025; the release's ``metric/metric.py``), per
group ``exp`` = expression [50], ``jaw`` = jaw [3], ``pose`` = neck [3]:

* ``fd``: Fréchet distance between Gaussian fits (mean, covariance over frames) of the
  predicted and ground-truth frames. Computed as ``|mu1-mu2|^2 + tr(S1) + tr(S2) -
  2 tr((S1^1/2 S2 S1^1/2)^1/2)`` with symmetric eigendecompositions, which equals the usual
  ``sqrtm(S1 S2)`` form and stays real for singular covariances (a jaw that never rolls).
* ``p_fd``: FD between ``[partner, pred]`` and ``[partner, gt]`` frame concatenations
  (partner = the other person's ground truth), as in the release.
* ``mse``: mean squared difference over frames and dims.
* ``sid``: k-means (k = 40 exp, 10 jaw, 10 pose; seeded k-means++ then Lloyd) fitted on one
  sequence, the other assigned to the clusters, SID = log2-entropy of the assignment histogram.
  The paper describes fitting on the ground truth and histogramming the prediction; that is the
  default (``fit_on="gt"``). The release script's argument order actually fits on the
  prediction and histograms the ground truth: ``fit_on="pred"`` reproduces it. If the fitted
  sequence has fewer distinct frames than k, k is reduced to that count.
* ``rpcc``: ``|PCC(gt, partner) - PCC(pred, partner)|``. PCC here is the Pearson correlation of
  the two ``[T, D]`` arrays **flattened** (all frames and dims as one series), which is what the
  release computes; ``mode="per_dim"`` instead averages the per-dimension Pearson correlations
  over frames across the dims where both series vary. A constant series has PCC 0.
* ``dualtalk_table(pred, gt, partner)`` returns all of them as ``{"fd_exp": ..., ...}``; given
  lists of sequences, each metric is computed per sequence and averaged, like the release.

**Lip sync**: ``lip_sync(audio, sample_rate, jaw)`` correlates the audio's loudness envelope
(RMS over a 40 ms window centred on each face frame time, raised to the power 0.6 -- Stevens'
law, loudness ~ intensity^0.3 -- so that quiet consonants count as well as loud vowels; it
raises the correlation for espeak speech by about 0.05 over raw RMS) with the jaw opening (``jaw[:, 0]``, the pitch
of the jaw rotation) at lags up to ``max_lag_s``; it returns the best Pearson correlation and
its lag in seconds (parabolic refinement between frames). Positive lag = the jaw moves after
the audio. Constant envelope or jaw -> ``(0.0, 0.0)``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from facebot.face.flame import CORE_DIM, N_EXPRESSION, FlameTrack

__all__ = [
    "LIP_EXPRESSION",
    "LIP_DIMS",
    "GROUPS",
    "SID_K",
    "mean_error",
    "lip_error",
    "mean_vertex_error",
    "lip_vertex_error",
    "lip_vertex_indices",
    "normalized_perplexity",
    "frechet_distance",
    "fd",
    "p_fd",
    "mse",
    "sid",
    "kmeans",
    "pcc",
    "rpcc",
    "dualtalk_table",
    "audio_envelope",
    "lip_sync",
]

LIP_EXPRESSION: tuple[int, ...] = tuple(range(10))
LIP_DIMS: tuple[int, ...] = LIP_EXPRESSION + (N_EXPRESSION, N_EXPRESSION + 1, N_EXPRESSION + 2)
GROUPS: dict[str, slice] = {
    "exp": slice(0, N_EXPRESSION),
    "jaw": slice(N_EXPRESSION, N_EXPRESSION + 3),
    "pose": slice(N_EXPRESSION + 3, CORE_DIM),
}
SID_K: dict[str, int] = {"exp": 40, "jaw": 10, "pose": 10}
LOUDNESS_EXPONENT = 0.6  # lip_sync compares RMS ** 0.6 (Stevens: loudness ~ intensity ** 0.3)


# ------------------------------------------------------------------------------ validation
def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _core(x, name: str) -> np.ndarray:
    """``[T, 56]`` float64 from a FlameTrack or array."""
    if isinstance(x, FlameTrack):
        exp = np.asarray(x.expression, np.float64)
        core = np.zeros((len(x), CORE_DIM))
        n = min(exp.shape[1], N_EXPRESSION)
        core[:, :n] = exp[:, :n]
        core[:, N_EXPRESSION:N_EXPRESSION + 3] = x.jaw_pose
        core[:, N_EXPRESSION + 3:] = x.neck_pose
        return _finite(core, name)
    try:
        arr = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a numeric array") from None
    if arr.ndim != 2 or arr.shape[1] != CORE_DIM:
        raise ValueError(f"{name} must be [T, {CORE_DIM}] (core layout) or a FlameTrack, got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no frames")
    return _finite(arr, name)


def _frames(x, name: str, min_frames: int = 1) -> np.ndarray:
    """``[T, D]`` float64 (a 1-D input is one dim)."""
    try:
        arr = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a numeric array") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be [T, D], got {list(arr.shape)}")
    if arr.shape[0] < min_frames:
        raise ValueError(f"{name} has {arr.shape[0]} frames, this metric needs at least {min_frames}")
    return _finite(arr, name)


def _same(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} {list(a.shape)} and {nb} {list(b.shape)} differ in shape")


# -------------------------------------------------------------------- reconstruction error
def _load_model(model):
    from facebot.face.flame_mesh import FlameModel

    if isinstance(model, (str, Path)):
        return FlameModel.load(model)
    if not hasattr(model, "vertices"):
        raise ValueError("model must be a FlameModel or the path of a converted FLAME .npz")
    return model


def _vertices(model, core: np.ndarray, with_neck: bool) -> np.ndarray:
    out = np.empty((core.shape[0], model.n_vertices, 3))
    zero = np.zeros(3)
    for t, c in enumerate(core):
        out[t] = model.vertices(expression=c[:N_EXPRESSION], jaw_pose=c[N_EXPRESSION:N_EXPRESSION + 3],
                                neck_pose=c[N_EXPRESSION + 3:] if with_neck else zero)
    return out


def mean_error(pred, gt, model=None, *, with_neck: bool = True, squared: bool = False) -> float:
    """Parameter space (no model): mean over frames of ``||pred - gt||_2`` over the 56 dims.
    With ``model``: mean vertex error (MVE), see ``mean_vertex_error``."""
    if model is not None:
        return mean_vertex_error(pred, gt, model, with_neck=with_neck, squared=squared)
    p, g = _core(pred, "pred"), _core(gt, "gt")
    _same(p, g, "pred", "gt")
    return float(np.linalg.norm(p - g, axis=1).mean())


def lip_error(pred, gt, model=None, *, dims: Sequence[int] = LIP_DIMS, lip_vertices=None,
              with_neck: bool = True, squared: bool = False) -> float:
    """Parameter space (no model): mean over frames of ``||(pred - gt)[dims]||_2`` (default
    ``LIP_DIMS``: jaw + expression 0-9). With ``model``: lip vertex error (LVE)."""
    if model is not None:
        return lip_vertex_error(pred, gt, model, lip_vertices, with_neck=with_neck, squared=squared)
    p, g = _core(pred, "pred"), _core(gt, "gt")
    _same(p, g, "pred", "gt")
    idx = np.asarray(dims, int).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= CORE_DIM:
        raise ValueError(f"dims must be indices in [0, {CORE_DIM})")
    return float(np.linalg.norm((p - g)[:, idx], axis=1).mean())


def _vertex_dist(pred, gt, model, with_neck: bool, squared: bool):
    m = _load_model(model)
    p, g = _core(pred, "pred"), _core(gt, "gt")
    _same(p, g, "pred", "gt")
    d2 = ((_vertices(m, p, with_neck) - _vertices(m, g, with_neck)) ** 2).sum(axis=2)  # [T, V]
    return m, (d2 if squared else np.sqrt(d2))


def mean_vertex_error(pred, gt, model, *, with_neck: bool = True, squared: bool = False) -> float:
    """MVE: mean over frames and vertices of the vertex L2 distance (model units)."""
    _, d = _vertex_dist(pred, gt, model, with_neck, squared)
    return float(d.mean())


def lip_vertex_error(pred, gt, model, lip_vertices=None, *, with_neck: bool = True, squared: bool = False) -> float:
    """LVE: per frame the largest L2 distance over the lip vertices, averaged over frames."""
    m, d = _vertex_dist(pred, gt, model, with_neck, squared)
    idx = lip_vertex_indices(m) if lip_vertices is None else np.asarray(lip_vertices, int).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= m.n_vertices:
        raise ValueError(f"lip_vertices must be non-empty indices in [0, {m.n_vertices})")
    return float(d[:, idx].max(axis=1).mean())


def lip_vertex_indices(model) -> np.ndarray:
    """Heuristic lip region of a FLAME-layout model (module docstring); sorted indices."""
    m = _load_model(model)
    v = m.v_template
    w = m.weights[:, 2]
    cand = np.nonzero((w > 0.02) & (w < 0.98))[0]
    if cand.size:
        z = v[cand, 2]
        cand = cand[z >= z.max() - 0.02]
    if cand.size >= 4:
        return np.sort(cand)
    closed = m.vertices(jaw_pose=np.zeros(3))
    opened = m.vertices(jaw_pose=np.array([0.2, 0.0, 0.0]))
    disp = np.linalg.norm(opened - closed, axis=1)
    front = np.nonzero(v[:, 2] >= np.median(v[:, 2]))[0]
    n = max(4, int(round(0.05 * front.size)))
    return np.sort(front[np.argsort(-disp[front], kind="stable")[:n]])


# ---------------------------------------------------------------------------- codebook use
def normalized_perplexity(codes, K: int, axis: int | None = None) -> float:
    """exp(entropy of the code histogram) / K, in [1/K, 1]. With ``axis``, each slice along it
    is a separate codebook (e.g. ``codes [T, N]``, ``axis=-1``) and the mean is returned."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be a positive int, got {K!r}")
    arr = np.asarray(codes)
    if arr.size == 0:
        raise ValueError("codes is empty")
    if arr.dtype.kind == "f":
        _finite(arr, "codes")
        if np.any(arr != np.round(arr)):
            raise ValueError("codes must be integers")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= K:
        raise ValueError(f"codes must lie in [0, {K}), got [{arr.min()}, {arr.max()}]")
    if axis is not None:
        books = np.moveaxis(arr, axis, -1).reshape(-1, arr.shape[axis])
        return float(np.mean([normalized_perplexity(books[:, j], K) for j in range(books.shape[1])]))
    p = np.bincount(arr.reshape(-1), minlength=K).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(math.exp(-(p * np.log(p)).sum()) / K)


# ------------------------------------------------------------------------ DualTalk metrics
def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("means and covariances must have matching dimensions")
    for a, n in ((mu1, "mu1"), (mu2, "mu2"), (s1, "s1"), (s2, "s2")):
        _finite(a, n)
    r1 = _sqrt_psd(s1)
    inner = np.linalg.eigvalsh((r1 @ s2 @ r1 + (r1 @ s2 @ r1).T) / 2)
    tr_cross = float(np.sqrt(np.clip(inner, 0.0, None)).sum())
    d = mu1 - mu2
    return float(max(0.0, d @ d + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross))


def _stats(x: np.ndarray):
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def fd(pred, gt) -> float:
    """Fréchet distance between the frame distributions of ``pred`` and ``gt`` ([T, D] each;
    lengths may differ). Needs at least 2 frames each."""
    p, g = _frames(pred, "pred", 2), _frames(gt, "gt", 2)
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"pred and gt have {p.shape[1]} and {g.shape[1]} dims")
    return frechet_distance(*_stats(p), *_stats(g))


def p_fd(pred, gt, partner) -> float:
    """FD between ``[partner, pred]`` and ``[partner, gt]`` (per-frame concatenation)."""
    p, g, o = _frames(pred, "pred", 2), _frames(gt, "gt", 2), _frames(partner, "partner", 2)
    _same(p, g, "pred", "gt")
    if o.shape[0] != p.shape[0]:
        raise ValueError(f"partner has {o.shape[0]} frames, pred has {p.shape[0]}")
    return fd(np.concatenate([o, p], axis=1), np.concatenate([o, g], axis=1))


def mse(pred, gt) -> float:
    p, g = _frames(pred, "pred"), _frames(gt, "gt")
    _same(p, g, "pred", "gt")
    return float(((p - g) ** 2).mean())


def kmeans(x, k: int, seed: int = 0, n_init: int = 3, iters: int = 100) -> np.ndarray:
    """Cluster centres ``[k', D]`` (k' = min(k, distinct rows)): k-means++ seeding and Lloyd
    iterations, best of ``n_init`` by inertia; deterministic for a seed."""
    x = _frames(x, "x")
    uniq = np.unique(x, axis=0)
    k = int(min(k, uniq.shape[0]))
    if k < 1:
        raise ValueError("k must be >= 1")
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(max(1, n_init)):
        centres = [uniq[rng.integers(uniq.shape[0])]]
        d2 = ((uniq - centres[0]) ** 2).sum(axis=1)
        for _ in range(1, k):
            total = d2.sum()
            i = int(rng.choice(uniq.shape[0], p=d2 / total)) if total > 0 else int(rng.integers(uniq.shape[0]))
            centres.append(uniq[i])
            d2 = np.minimum(d2, ((uniq - uniq[i]) ** 2).sum(axis=1))
        c = np.array(centres)
        for _ in range(iters):
            lab = _assign(x, c)
            new = c.copy()
            for j in range(k):
                members = x[lab == j]
                if members.shape[0]:
                    new[j] = members.mean(axis=0)
            if np.allclose(new, c, rtol=0, atol=1e-12):
                break
            c = new
        inertia = float(((x - c[_assign(x, c)]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    return best


def _assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    return np.argmin(d, axis=1)


def sid(pred, gt, k: int, seed: int = 0, fit_on: str = "gt") -> float:
    """log2-entropy of the histogram of cluster assignments (see module docstring)."""
    p, g = _frames(pred, "pred"), _frames(gt, "gt")
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"pred and gt have {p.shape[1]} and {g.shape[1]} dims")
    if fit_on not in ("gt", "pred"):
        raise ValueError(f"fit_on must be 'gt' or 'pred', got {fit_on!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    fit, other = (g, p) if fit_on == "gt" else (p, g)
    centres = kmeans(fit, k, seed)
    hist = np.bincount(_assign(other, centres), minlength=centres.shape[0]).astype(np.float64)
    q = hist[hist > 0] / hist.sum()
    return float(-(q * np.log2(q)).sum())


def pcc(x, y, mode: str = "flat") -> float:
    """Pearson correlation of two ``[T, D]`` arrays: ``"flat"`` (all values as one series, as
    the DualTalk release) or ``"per_dim"`` (mean over dims of per-dim correlations over frames,
    over the dims where both vary). Undefined (constant) -> 0."""
    a, b = _frames(x, "x", 2), _frames(y, "y", 2)
    _same(a, b, "x", "y")
    if mode == "flat":
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    elif mode != "per_dim":
        raise ValueError(f"mode must be 'flat' or 'per_dim', got {mode!r}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na, nb = np.sqrt((a * a).sum(axis=0)), np.sqrt((b * b).sum(axis=0))
    ok = (na > 1e-12) & (nb > 1e-12)
    if not ok.any():
        return 0.0
    r = (a[:, ok] * b[:, ok]).sum(axis=0) / (na[ok] * nb[ok])
    return float(np.clip(r.mean(), -1.0, 1.0))


def rpcc(pred, gt, partner, mode: str = "flat") -> float:
    """``|PCC(gt, partner) - PCC(pred, partner)|``."""
    p, g, o = _frames(pred, "pred", 2), _frames(gt, "gt", 2), _frames(partner, "partner", 2)
    _same(p, g, "pred", "gt")
    _same(o, g, "partner", "gt")
    return abs(pcc(g, o, mode) - pcc(p, o, mode))


def dualtalk_table(pred, gt, partner, *, seed: int = 0, sid_fit_on: str = "gt", pcc_mode: str = "flat") -> dict:
    """All DualTalk metrics per group: keys ``{fd,p_fd,mse,sid,rpcc}_{exp,jaw,pose}``.

    ``pred``, ``gt``, ``partner``: ``[T, 56]`` core arrays (or FlameTracks), or equal-length
    lists of them (one per sequence; metrics are averaged over sequences). ``partner`` is the
    other person's ground truth over the same frames."""
    if isinstance(pred, (list, tuple)):
        if not (isinstance(gt, (list, tuple)) and isinstance(partner, (list, tuple))
                and len(pred) == len(gt) == len(partner) and len(pred) > 0):
            raise ValueError("pred, gt and partner must be equally long non-empty lists of sequences")
        rows = [dualtalk_table(p, g, o, seed=seed, sid_fit_on=sid_fit_on, pcc_mode=pcc_mode)
                for p, g, o in zip(pred, gt, partner)]
        return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    p, g, o = _core(pred, "pred"), _core(gt, "gt"), _core(partner, "partner")
    _same(p, g, "pred", "gt")
    _same(o, g, "partner", "gt")
    if p.shape[0] < 2:
        raise ValueError("sequences need at least 2 frames")
    out = {}
    for name, sl in GROUPS.items():
        out[f"fd_{name}"] = fd(p[:, sl], g[:, sl])
        out[f"p_fd_{name}"] = p_fd(p[:, sl], g[:, sl], o[:, sl])
        out[f"mse_{name}"] = mse(p[:, sl], g[:, sl])
        out[f"sid_{name}"] = sid(p[:, sl], g[:, sl], SID_K[name], seed, sid_fit_on)
        out[f"rpcc_{name}"] = rpcc(p[:, sl], g[:, sl], o[:, sl], pcc_mode)
    return out


# ------------------------------------------------------------------------------- lip sync
def audio_envelope(audio, sample_rate: int, n_frames: int, fps: int = 25, window_s: float = 0.04) -> np.ndarray:
    """RMS of ``window_s`` of audio centred on each frame time ``k / fps`` (zero-padded)."""
    a = np.asarray(audio, np.float64)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N], got {list(a.shape)}")
    _finite(a, "audio")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    half = max(1, int(round(window_s * sample_rate / 2)))
    c2 = np.concatenate([[0.0], np.cumsum(a * a)])
    centres = np.round(np.arange(n_frames) * sample_rate / fps).astype(np.int64)
    lo = np.clip(centres - half, 0, a.size)
    hi = np.clip(centres + half, 0, a.size)
    return np.sqrt((c2[hi] - c2[lo]) / (2 * half))


def _jaw_opening(jaw) -> np.ndarray:
    if isinstance(jaw, FlameTrack):
        arr = np.asarray(jaw.jaw_pose, np.float64)[:, 0]
    else:
        try:
            arr = np.asarray(jaw, np.float64)
        except (TypeError, ValueError):
            raise ValueError("jaw is not a numeric array") from None
        if arr.ndim == 2 and arr.shape[1] == CORE_DIM:
            arr = arr[:, N_EXPRESSION]
        elif arr.ndim == 2 and arr.shape[1] == 3:
            arr = arr[:, 0]
        elif arr.ndim != 1:
            raise ValueError(f"jaw must be [T], [T, 3] or [T, {CORE_DIM}], got {list(arr.shape)}")
    return _finite(arr, "jaw")


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    d = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 1e-20 else 0.0


def lip_sync(audio, sample_rate: int, jaw, fps: int = 25, max_lag_s: float = 0.2) -> tuple[float, float]:
    """(best correlation, lag in s) between the audio envelope and the jaw opening.
    Positive lag = jaw after audio. Needs at least 4 frames of overlap."""
    j = _jaw_opening(jaw)
    if not (math.isfinite(max_lag_s) and max_lag_s >= 0):
        raise ValueError(f"max_lag_s must be finite and >= 0, got {max_lag_s!r}")
    n_audio = int(np.asarray(audio).size * fps // max(1, int(sample_rate))) if np.ndim(audio) else 0
    t = min(j.size, n_audio + 1)
    if t < 4:
        raise ValueError(f"lip_sync needs at least 4 frames of audio and jaw, got {t}")
    env = audio_envelope(audio, sample_rate, t, fps) ** LOUDNESS_EXPONENT
    j = j[:t]
    lmax = int(min(round(max_lag_s * fps), t - 3))
    lags = np.arange(-lmax, lmax + 1)
    corrs = np.array([_corr(env[max(0, -k):t - max(0, k)], j[max(0, k):t - max(0, -k)]) for k in lags])
    i = int(np.argmax(corrs))
    lag = float(lags[i])
    if 0 < i < lags.size - 1:
        y0, y1, y2 = corrs[i - 1], corrs[i], corrs[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lag += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    if corrs[i] == 0.0:
        return 0.0, 0.0
    return float(corrs[i]), lag / fps
