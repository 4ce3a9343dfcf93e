"""Face codec (VQ-VAE over FLAME motion): shapes, streaming == offline, non-causal baseline,
checkpoints and exact resume, dead-code restarts, training on procedural motion."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facebot.model.face_codec import (
    FaceCodec,
    FaceCodecConfig,
    VectorQuantizer,
    load_face_codec,
    normalized_perplexity,
    save_face_codec,
)
from facebot.train.codec_train import (
    CKPT_NAME,
    LOG_NAME,
    MODEL_NAME,
    evaluate_codec,
    procedural_tracks,
    train_codec,
)

torch.set_num_threads(1)

SMALL = dict(hidden=64, codebook_size=64, codebook_dim=32, num_tokens=8, dim_feedforward=128,
             context=8)


@pytest.fixture(scope="module")
def motion():
    """~100 s of procedural training motion and 30 s held out."""
    return procedural_tracks(50, 2, seed=0), procedural_tracks(30, 1, seed=7)


def _random_codec(causal=True, **kw):
    torch.manual_seed(0)
    cfg = FaceCodecConfig(causal=causal, **{**SMALL, **kw})
    m = FaceCodec(cfg).eval()
    m.set_normalization(torch.randn(56) * 0.1, torch.rand(56) * 0.2 + 0.05)
    return m


def test_shapes_and_state_is_static():
    m = _random_codec()
    x = torch.randn(3, 40, 56)
    tok = m.encode(x)
    assert tok.shape == (3, 8, 20) and tok.dtype == torch.int64
    assert int(tok.min()) >= 0 and int(tok.max()) < 64
    assert m.decode(tok).shape == (3, 40, 56)
    enc, dec = m.init_encoder_state(3), m.init_decoder_state(3)
    shapes = {k: v.shape for k, v in {**enc, **dec}.items()}
    t, enc2 = m.encode_step(x[:, :2], enc)
    f, dec2 = m.decode_step(t, dec)
    assert t.shape == (3, 8, 1) and f.shape == (3, 2, 56)
    assert {k: v.shape for k, v in {**enc2, **dec2}.items()} == shapes
    assert int(enc2["enc.tf.offset"]) == 1 and int(dec2["dec.tf.offset"]) == 1
    with pytest.raises(ValueError, match="multiple of r"):
        m.encode(torch.randn(1, 41, 56))
    with pytest.raises(ValueError, match="56"):
        m.encode(torch.randn(1, 40, 50))
    with pytest.raises(ValueError, match="tokens"):
        m.decode(torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="2 frames"):
        m.encode_step(x[:, :4], m.init_encoder_state(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streaming_equals_offline_after_the_ring_wraps(dtype):
    """300 steps (24 s) with a KV ring of 8 frames: wrapped ~37 times."""
    m = _random_codec().to(dtype)
    T = 600
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, T, 56, generator=g, dtype=dtype) * m.std + m.mean).cumsum(1) * 0.05
    with torch.no_grad():
        tok = m.encode(x)
        st = m.init_encoder_state(2, dtype=dtype)
        toks = []
        for t in range(T // 2):
            k, st = m.encode_step(x[:, 2 * t:2 * t + 2], st)
            toks.append(k)
        assert torch.equal(torch.cat(toks, 2), tok)

        y = m.decode(tok)
        st = m.init_decoder_state(2, dtype=dtype)
        ys = []
        for t in range(T // 2):
            f, st = m.decode_step(tok[:, :, t:t + 1], st)
            ys.append(f)
        ys = torch.cat(ys, 1)
    assert ys.dtype == dtype
    err = (ys - y).abs().max().item()
    assert err <= (1e-6 if dtype == torch.float32 else 1e-12), err


def test_streaming_equals_offline_on_a_trained_codec(motion):
    train, held = motion
    m, _ = train_codec(train, FaceCodecConfig(**SMALL), steps=30, batch=8, clip_frames=32,
                       verbose=False)
    x = torch.from_numpy(held[0][:500])[None]
    with torch.no_grad():
        tok = m.encode(x)
        y = m.decode(tok)
        es, ds = m.init_encoder_state(1), m.init_decoder_state(1)
        toks, ys = [], []
        for t in range(250):
            k, es = m.encode_step(x[:, 2 * t:2 * t + 2], es)
            f, ds = m.decode_step(k, ds)
            toks.append(k)
            ys.append(f)
    assert torch.equal(torch.cat(toks, 2), tok)
    assert (torch.cat(ys, 1) - y).abs().max().item() <= 1e-6


def test_non_causal_is_offline_only_and_sees_the_future():
    m = _random_codec(causal=False)
    x = torch.randn(1, 40, 56)
    with torch.no_grad():
        y = m.decode(m.encode(x))
        x2 = x.clone()
        x2[:, 30:] += 1.0
        tok1, tok2 = m.encode(x), m.encode(x2)
    assert y.shape == x.shape
    assert not torch.equal(tok1[:, :, :10], tok2[:, :, :10])  # future changes past tokens
    for call in (m.init_encoder_state, m.init_decoder_state):
        with pytest.raises(ValueError, match="offline only"):
            call(1)
    with pytest.raises(ValueError, match="offline only"):
        m.decode_step(torch.zeros(1, 8, 1, dtype=torch.long), {})
    # the causal one does not
    c = _random_codec()
    with torch.no_grad():
        assert torch.equal(c.encode(x)[:, :, :15], c.encode(x2)[:, :, :15])


def test_normalized_perplexity():
    assert normalized_perplexity(torch.arange(64), 64) == pytest.approx(1.0)
    assert normalized_perplexity(torch.zeros(100, dtype=torch.long), 64) == pytest.approx(1 / 64)
    assert normalized_perplexity(torch.arange(32).repeat(3), 64) == pytest.approx(0.5)


def test_dead_code_restart_raises_perplexity():
    """Toy: a codebook initialised far from the data collapses onto a few entries; restarting
    dead entries from encoder outputs spreads usage."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4096, 1, 1, 8, generator=g)  # [B, T, N, C]

    def run(restart: bool) -> float:
        torch.manual_seed(0)
        q = VectorQuantizer(1, 1, 64, 8, decay=0.9)
        q.embed.mul_(0.1).add_(5.0)  # far away: one entry wins everything
        q.ema_count.fill_(1.0)  # "used": nothing restarts unless it decays
        q.ema_sum.copy_(q.embed)  # consistent EMA statistics (sum = count * entry)
        for _ in range(40):
            q(data, update=True)
            if restart:
                q.restart_dead(data, generator=g)
        return normalized_perplexity(q.codes(data), 64)

    without, with_ = run(False), run(True)
    assert without < 0.1
    assert with_ > 0.6 and with_ > 5 * without


def test_training_beats_mean_face_and_logs(motion, tmp_path, capsys):
    train, held = motion
    cfg = FaceCodecConfig(**SMALL)
    m, hist = train_codec(train, cfg, steps=300, batch=16, clip_frames=32, lr=3e-3,
                          out_dir=tmp_path, log_every=75, ckpt_every=100)
    assert len(hist) == 300 and hist[-1]["step"] == 300
    assert np.mean([h["rec"] for h in hist[-20:]]) < 0.6 * np.mean([h["rec"] for h in hist[:5]])
    r = evaluate_codec(m, held, clip_frames=64)
    # (full-size codec, longer runs: ~0.35 of the baseline; see bench/face_codec_sweep.py)
    assert r["mean_l2"] < 0.7 * r["baseline_mean_l2"], r
    assert r["lip_error"] < 0.7 * r["baseline_lip_error"], r
    assert r["perplexity"] > 0.3, r
    assert len(r["perplexity_per_position"]) == 8
    # logs: a line per 75 steps, a progress print per 75 steps
    lines = [json.loads(s) for s in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [e["step"] for e in lines] == [75, 150, 225, 300]
    assert {"loss", "rec", "vel", "commit", "perplexity", "restarted", "steps_per_s"} <= set(lines[0])
    out = capsys.readouterr().out
    assert out.count("[codec] step") == 4 and "ppl" in out
    # model-only checkpoint and the training checkpoint both load as a codec (with normalisation)
    for name in (MODEL_NAME, CKPT_NAME):
        m2 = load_face_codec(tmp_path / name)
        assert torch.equal(m2.std, m.std) and torch.equal(m2.quantizer.embed, m.quantizer.embed)
        x = torch.from_numpy(held[0][:64])[None]
        with torch.no_grad():
            assert torch.equal(m2.decode(m2.encode(x)), m.decode(m.encode(x)))


def test_resume_gives_the_same_next_losses(motion, tmp_path):
    train, _ = motion
    cfg = FaceCodecConfig(**SMALL)
    kw = dict(batch=8, clip_frames=32, seed=3, verbose=False, log_every=0)
    _, full = train_codec(train, cfg, steps=12, **kw)
    _, first = train_codec(train, cfg, steps=7, out_dir=tmp_path, **kw)
    _, rest = train_codec(train, cfg, steps=12, out_dir=tmp_path, resume=True, **kw)
    assert [h["step"] for h in rest] == list(range(8, 13))
    assert [h["loss"] for h in first + rest] == [h["loss"] for h in full]
    with pytest.raises(ValueError, match="config differs"):
        train_codec(train, FaceCodecConfig(**{**SMALL, "codebook_size": 32}), steps=13,
                    out_dir=tmp_path, resume=True, **kw)


def test_causal_close_to_non_causal_small_scale(motion):
    """Small-scale version of the done-criterion (full scale: bench/face_codec_sweep.py)."""
    train, held = motion
    errs = {}
    for causal in (True, False):
        cfg = FaceCodecConfig(**{**SMALL, "causal": causal})
        m, _ = train_codec(train, cfg, steps=250, batch=16, clip_frames=32, lr=2e-3,
                           verbose=False, log_every=0)
        errs[causal] = evaluate_codec(m, held, clip_frames=64)["mean_l2"]
    assert errs[True] <= 1.15 * errs[False], errs


def test_save_load_round_trip_and_bad_files(tmp_path):
    m = _random_codec()
    p = tmp_path / "c.safetensors"
    save_face_codec(m, p)
    m2 = load_face_codec(p)
    assert m2.cfg == m.cfg
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    from facebot.model.checkpoint import CheckpointError
    (tmp_path / "x.pt").write_bytes(b"nope")
    with pytest.raises(CheckpointError):
        load_face_codec(tmp_path / "x.pt")


def test_metrics_agree_with_facebot_train_metrics(motion):
    """The codec's lip error / perplexity use the same definitions as facebot.train.metrics."""
    metrics = pytest.importorskip("facebot.train.metrics")
    from facebot.model.face_codec import LIP_DIMS
    assert tuple(metrics.LIP_DIMS) == LIP_DIMS
    _, held = motion
    m = _random_codec()
    x = held[0][:200]
    r = evaluate_codec(m, [x])
    with torch.no_grad():
        tok = m.encode(torch.from_numpy(x)[None])
        y = m.decode(tok)[0].numpy()
    assert r["lip_error"] == pytest.approx(metrics.lip_error(y, x), rel=1e-5)
    assert r["perplexity"] == pytest.approx(metrics.normalized_perplexity(tok.numpy(), 64), rel=1e-6)
