"""Moshi-Face: Face Transformer, face streams, the streaming face step and the model backend's face."""
import numpy as np
import pytest
import torch

from facebot.face.flame import FlameFrame, FrameSource
from facebot.model.checkpoint import CheckpointError, save_safetensors
from facebot.model.face_codec import FaceCodec, FaceCodecConfig, save_face_codec
from facebot.model.face_transformer import (FaceLM, FaceTransformer, FaceTransformerConfig, face_loss,
                                            load_face_lm, save_face_lm)
from facebot.model.lm import build_lm
from facebot.model.sampling import SamplingConfig, make_generator
from facebot.runtime.face_lm_step import FaceLMStep
from facebot.runtime.lm_step import LMStep

torch.set_num_threads(1)
N, K = 4, 16


def codec(seed=0):
    torch.manual_seed(seed)
    return FaceCodec(FaceCodecConfig(hidden=32, codebook_size=K, codebook_dim=8, num_tokens=N,
                                     dim_feedforward=64)).eval()


def face_cfg(dim_in=64, **kw):
    return FaceTransformerConfig(dim_in=dim_in, dim=32, num_layers=2, num_heads=4, num_tokens=N,
                                 codebook_size=K, **kw)


def face_lm(seed=1, **kw):
    torch.manual_seed(seed)
    zero = kw.pop("zero_init_streams", True)
    return FaceLM(face_cfg(**kw), zero_init_streams=zero).eval()


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return build_lm("tiny")


def user_codes(n, lm, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, lm.cfg.card, (1, 8), generator=g) for _ in range(n)]


def test_face_transformer_shapes_and_prev_token_ablation():
    torch.manual_seed(0)
    e = torch.randn(3, 64)
    p1 = torch.randint(0, K, (3, N))
    p2 = (p1 + 1) % K
    ft = FaceTransformer(face_cfg()).eval()
    with torch.no_grad():
        assert ft(e, p1).shape == (3, N, K)
        assert ft(e[:, None].expand(3, 5, 64), p1[:, None].expand(3, 5, N)).shape == (3, 5, N, K)
        assert not torch.allclose(ft(e, p1), ft(e, p2))  # the previous frame's tokens are used
        assert torch.allclose(ft(e, None), ft(e, torch.full_like(p1, K)))  # None = "no token yet"
    abl = FaceTransformer(face_cfg(use_prev_tokens=False)).eval()
    assert abl.prev_emb is None and not any("prev_emb" in k for k in abl.state_dict())
    with torch.no_grad():
        assert torch.equal(abl(e, p1), abl(e, p2)) and torch.equal(abl(e, p1), abl(e, None))


def test_step_shapes_and_static_state(lm):
    st = FaceLMStep(LMStep(lm, SamplingConfig.greedy()), face_lm(), codec())
    with torch.inference_mode():
        s = st.init_state(1)
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in s.items()}
        assert s["face.prev"].tolist() == [[K] * N] and any(k.startswith("face.dec.") for k in s)
        for i, c in enumerate(user_codes(4, lm)):
            tok, valid, ft, face, s = st.step(c, torch.randint(0, K, (1, N)) if i % 2 else None, s)
            assert tok.shape == (1, 9) and valid.shape == (1,) and bool(valid) == (i >= lm.cfg.max_delay)
            assert ft.shape == (1, N) and ft.dtype == torch.long and ((ft >= 0) & (ft < K)).all()
            assert face.shape == (1, 2, 56) and torch.isfinite(face).all()
            assert {k: (tuple(v.shape), v.dtype) for k, v in s.items()} == shapes
            assert torch.equal(s["face.prev"], ft)


def run_face(lm, steps=12, sampling=None, fl=None, user_face=False, face_temp=0.0, seed=None):
    st = FaceLMStep(LMStep(lm, sampling or SamplingConfig.greedy()), fl or face_lm(), codec(),
                    face_temp=face_temp, face_top_k=5)
    gen = make_generator(seed)
    g = torch.Generator().manual_seed(7)
    out = []
    with torch.inference_mode():
        s = st.init_state(1)
        for c in user_codes(steps, lm):
            uf = torch.randint(0, K, (1, N), generator=g) if user_face else None
            tok, valid, ft, face, s = st.step(c, uf, s, generator=gen)
            out.append((tok.clone(), ft.clone(), face.clone()))
    return out


def test_greedy_face_path_is_deterministic(lm):
    a, b = run_face(lm, 8, user_face=True), run_face(lm, 8, user_face=True)
    for (t1, f1, x1), (t2, f2, x2) in zip(a, b):
        assert torch.equal(t1, t2) and torch.equal(f1, f2) and torch.equal(x1, x2)


def test_zero_face_embeddings_keep_speech_tokens(lm):
    step = LMStep(lm, SamplingConfig.greedy())
    ref = []
    with torch.inference_mode():
        s = step.init_state(1)
        for c in user_codes(12, lm):
            tok, _, s = step.step(c, s)
            ref.append(tok.clone())
    with_face = run_face(lm, 12, user_face=True)
    assert all(torch.equal(r, t) for r, (t, _, _) in zip(ref, with_face))
    trained = run_face(lm, 12, user_face=True, fl=face_lm(zero_init_streams=False))
    assert not all(torch.equal(r, t) for r, (t, _, _) in zip(ref, trained))  # the streams are wired in


def test_sampled_streaming_30_frames_gives_finite_flame_frames(lm):
    sp = SamplingConfig(seed=None)
    a = run_face(lm, 30, sampling=sp, face_temp=1.0, seed=11, user_face=True)
    b = run_face(lm, 30, sampling=sp, face_temp=1.0, seed=11, user_face=True)
    c = run_face(lm, 30, sampling=sp, face_temp=1.0, seed=12, user_face=True)
    for _, _, face in a:
        frames = [FlameFrame.from_core(face[0, j].numpy(), source=FrameSource.MODEL) for j in range(2)]
        assert len(frames) == 2 and all(f.is_finite() for f in frames)
    fa, fb, fc = (torch.stack([f for _, f, _ in r]) for r in (a, b, c))
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)
    assert len(torch.unique(fa)) > 1  # sampled, not one token over and over


def test_noise_as_input_makes_the_step_pure(lm):
    st = FaceLMStep(LMStep(lm, SamplingConfig()), face_lm(), codec(), face_temp=0.8, face_top_k=4)
    noise = st.draw_noise(1, make_generator(5))
    assert noise[1].shape == (1, N, 4)
    outs = []
    with torch.inference_mode():
        for _ in range(2):
            s = st.init_state(1)
            c = user_codes(1, lm)[0]
            outs.append(st.step(c, None, s, noise)[:4])
    assert all(torch.equal(x, y) for x, y in zip(*outs))


def test_face_loss_trains_the_face_parameters_only(lm):
    torch.manual_seed(0)
    fl = FaceLM(face_cfg(), zero_init_streams=False).train()
    B, S = 2, 6
    tokens = torch.randint(0, lm.cfg.card, (B, 1 + lm.cfg.n_q, S))
    tokens[:, 0] = torch.randint(0, lm.cfg.text_card, (B, S))
    batch = {"tokens": tokens, "robot_face": torch.randint(0, K, (B, N, S)),
             "user_face": torch.randint(0, K, (B, N, S))}
    opt = torch.optim.Adam(fl.parameters(), lr=3e-3)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    losses = []
    for _ in range(4):
        loss = face_loss(lm, fl, batch)
        opt.zero_grad()
        loss.backward()
        assert fl.robot_emb[0].weight.grad is not None and fl.face_transformer.out.weight.grad is not None
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(p.grad is None for p in lm.parameters())
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in before.items())


def test_face_lm_save_load_roundtrip(tmp_path):
    fl = face_lm(zero_init_streams=False, use_prev_tokens=False)
    save_face_lm(fl, tmp_path / "face_lm.safetensors")
    back = load_face_lm(tmp_path / "face_lm.safetensors")
    assert back.cfg == fl.cfg
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in fl.state_dict().items())
    sd = {k: v for k, v in fl.state_dict().items() if not k.startswith("face_transformer.out.")}
    save_safetensors(sd, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError):
        load_face_lm(tmp_path / "partial.safetensors")  # no config in the metadata


def test_step_refuses_mismatched_parts(lm):
    with pytest.raises(ValueError, match="dim_in"):
        FaceLMStep(LMStep(lm, SamplingConfig.greedy()), face_lm(dim_in=32), codec())
    torch.manual_seed(0)
    other = FaceCodec(FaceCodecConfig(hidden=32, codebook_size=8, codebook_dim=8, num_tokens=N, dim_feedforward=64))
    with pytest.raises(ValueError, match="face codec"):
        FaceLMStep(LMStep(lm, SamplingConfig.greedy()), face_lm(), other)


def test_model_backend_publishes_model_faces(tmp_path):
    from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, AudioFrame
    from facebot.pipeline.duplex import DuplexLoop
    from facebot.model.loading import ModelLoadError
    from facebot.pipeline.model_backend import ModelBackend
    from facebot.config.model import ModelOptions

    save_face_lm(face_lm(), tmp_path / "face_lm.safetensors")
    save_face_codec(codec(), tmp_path / "face_codec.safetensors")
    rng = np.random.default_rng(0)
    frames = [AudioFrame((0.1 * rng.normal(size=FRAME_SAMPLES)).astype(np.float32), k * FRAME_NS, k)
              for k in range(6)]

    def run(**kw):
        backend = ModelBackend(ModelOptions(config="tiny", greedy=True, **kw))
        loop = DuplexLoop(backend, seed=0)
        return backend, [loop.step(f) for f in frames]

    plain, rp = run()
    assert "procedural face" in plain.describe()
    assert all(f.source != FrameSource.MODEL for r in rp for f in r.flame)
    for spec in (str(tmp_path), f"{tmp_path / 'face_lm.safetensors'},{tmp_path / 'face_codec.safetensors'}"):
        face, rf = run(face_weights=spec)
        assert "model face" in face.describe()
        assert all(len(r.flame) == 2 and all(f.source == FrameSource.MODEL and f.is_finite() for f in r.flame)
                   for r in rf)
        # zero-initialised face streams: the voice is the plain backend's
        assert all(np.array_equal(a.robot_audio, b.robot_audio) for a, b in zip(rp, rf))
    with pytest.raises(ModelLoadError, match="no such face weights"):
        ModelBackend(ModelOptions(config="tiny", face_weights=str(tmp_path / "nope")))


def test_model_faces_start_from_the_export_folder_alone(tmp_path, monkeypatch):
    """Issue 17: with a face model, `--engine DIR` starts from the exported graphs alone (no
    torch network built, the face codec's encoder loaded by itself for the user's stream) and
    gives the torch runtime's faces and voice."""
    from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, AudioFrame
    from facebot.config.model import ModelOptions
    from facebot.export.prepare import prepare_export
    from facebot.pipeline.duplex import DuplexLoop
    from facebot.pipeline.model_backend import ModelBackend

    save_face_lm(face_lm(), tmp_path / "face_lm.safetensors")
    save_face_codec(codec(), tmp_path / "face_codec.safetensors")
    rng = np.random.default_rng(1)
    frames = [AudioFrame((0.1 * rng.normal(size=FRAME_SAMPLES)).astype(np.float32), k * FRAME_NS, k)
              for k in range(6)]
    opts = dict(config="tiny", greedy=True, face_weights=str(tmp_path), threads=1)

    def run(backend):
        loop = DuplexLoop(backend, seed=0)
        return [loop.step(f) for f in frames]

    reference = run(ModelBackend(ModelOptions(**opts)))
    prepare_export(ModelOptions(**opts, runtime="onnxruntime", export_dir=str(tmp_path / "g")))

    import facebot.model.face_transformer as face_mod
    import facebot.model.lm as lm_mod

    def refuse(*a, **k):
        raise AssertionError("a torch network was built")

    monkeypatch.setattr(lm_mod, "build_lm", refuse)
    monkeypatch.setattr(face_mod.FaceLM, "__init__", refuse)
    backend = ModelBackend(ModelOptions(**opts, runtime="onnxruntime", export_dir=str(tmp_path / "g")))
    assert backend.lm is None and "model face" in backend.describe()
    for a, b in zip(reference, run(backend)):
        assert np.abs(a.robot_audio - b.robot_audio).max() <= 1e-4
        assert all(f.source == FrameSource.MODEL for f in b.flame)
        for fa, fb in zip(a.flame, b.flame):
            assert np.abs(fa.expression - fb.expression).max() <= 1e-3
            assert np.abs(fa.jaw_pose - fb.jaw_pose).max() <= 1e-3
