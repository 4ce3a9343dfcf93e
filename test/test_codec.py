"""Our Mimi codec on its own (no moshi needed): streaming convolutions, streaming == whole-clip,
static state, batching, Kyutai checkpoint import and its errors, export of the steps."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from facebot.model.checkpoint import CheckpointError, save_safetensors
from facebot.model.codec import MimiCodec, MimiConfig, _check_entries_cover, codec_config
from facebot.model.conv import StreamConv1d, StreamConvTranspose1d

sys.path.insert(0, str(Path(__file__).parent))
from codec_reference import speech_like  # noqa: E402

torch.set_num_threads(1)
FS = 1920


def _random_codebooks(codec: MimiCodec, seed: int = 0) -> MimiCodec:
    """Codewords around the latents of a speech-like clip (fresh codebooks are all zeros)."""
    g = torch.Generator().manual_seed(seed)
    q = codec.quantizer
    with torch.no_grad():
        x = codec.encoder.step(speech_like(10 * FS, seed=seed + 50).transpose(1, 2),
                               codec.encoder.init_state(1), {})
        x = codec.encoder_transformer(x)
        x = codec.downsample.step(x, codec.downsample.init_state(1), {}).reshape(-1, codec.cfg.dimension)
        embs = []
        n_sem = q.cfg.n_q_semantic
        for w, levels in ((q.in_proj_first, range(n_sem)),
                          (q.in_proj_rest, range(n_sem, q.cfg.num_codebooks))):
            r = x @ w.t()  # level by level, around what the previous levels leave over
            for _ in levels:
                emb = r.mean(0) + r.std(0) * torch.randn(q.codebooks.shape[1:], generator=g)
                r = r - emb[torch.cdist(r, emb).argmin(-1)]
                embs.append(emb)
        q.set_codebooks(torch.stack(embs))
    return codec


@pytest.fixture(scope="module")
def tiny() -> MimiCodec:
    torch.manual_seed(0)
    return _random_codebooks(MimiCodec(MimiConfig.tiny()))


def _stream_encode(codec, pcm, state=None, frames_per_call=1):
    state = codec.init_state(pcm.shape[0]) if state is None else state
    n = pcm.shape[-1] // FS
    codes = []
    for i in range(0, n, frames_per_call):
        c, state = codec.encode_step(pcm[..., i * FS:(i + frames_per_call) * FS], state)
        codes.append(c)
    return torch.cat(codes, -1), state


def _stream_decode(codec, codes, state=None):
    state = codec.init_state(codes.shape[0]) if state is None else state
    out = []
    for i in range(codes.shape[-1]):
        y, state = codec.decode_step(codes[..., i:i + 1], state)
        out.append(y)
    return torch.cat(out, -1), state


# ---- convolutions ---------------------------------------------------------------------------

@pytest.mark.parametrize("ci,co,k,s,d,pad", [(3, 5, 7, 1, 1, "constant"), (4, 6, 8, 4, 1, "constant"),
                                             (4, 4, 3, 1, 3, "constant"), (5, 5, 4, 2, 1, "replicate"),
                                             (4, 6, 1, 1, 1, "constant"), (2, 3, 16, 8, 1, "constant")])
def test_conv_streaming_equals_whole(ci, co, k, s, d, pad):
    torch.manual_seed(1)
    conv = StreamConv1d(ci, co, k, s, d, pad_mode=pad, pre_elu=True)
    conv.key = "c."
    x = torch.randn(2, 12 * s, ci)
    with torch.no_grad():
        whole = conv.step(x, conv.init_state(2), {})
        st, parts = conv.init_state(2), []
        for i in range(0, x.shape[1], 3 * s):
            new = {}
            parts.append(conv.step(x[:, i:i + 3 * s], st, new))
            assert set(new) == set(st) and all(new[n].shape == st[n].shape for n in st)
            st = {**st, **new}
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-6)
    # causal zero padding: first output only sees x[0]
    with torch.no_grad():
        y0 = conv.step(x[:, :s], conv.init_state(2), {})
        x2 = x.clone()
        x2[:, s:] = 0
        assert torch.allclose(conv.step(x2[:, :s], conv.init_state(2), {}), y0)


@pytest.mark.parametrize("ci,co,k,s,groups", [(6, 4, 8, 4, 1), (4, 4, 4, 2, 4), (5, 3, 3, 3, 1)])
def test_convtr_streaming_equals_whole(ci, co, k, s, groups):
    torch.manual_seed(2)
    conv = StreamConvTranspose1d(ci, co, k, s, groups=groups, pre_elu=True)
    conv.key = "t."
    x = torch.randn(2, 9, ci)
    with torch.no_grad():
        whole = conv.step(x, conv.init_state(2), {})
        st, parts = conv.init_state(2), []
        for i in range(0, 9, 2):
            new = {}
            parts.append(conv.step(x[:, i:i + 2], st, new))
            st = {**st, **new}
    assert whole.shape == (2, 9 * s, co)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-6)


def test_conv_rejects_bad_shapes():
    with pytest.raises(ValueError):
        StreamConv1d(2, 2, 2, stride=4)
    with pytest.raises(ValueError):
        StreamConvTranspose1d(2, 2, 5, 2)
    conv = StreamConv1d(2, 2, 4, stride=2)
    with pytest.raises(ValueError, match="stride"):
        conv.step(torch.zeros(1, 3, 2), conv.init_state(1), {})


# ---- the codec ------------------------------------------------------------------------------

def test_presets():
    m = codec_config("mimi")
    assert (m.frame_size, m.encoder_frame_rate, m.resample_stride, m.num_codebooks) == (1920, 25.0, 2, 8)
    assert m.quantizer.bins == 2048 and m.quantizer.n_q == 32 and m.dimension == 512
    assert codec_config("small") == m
    t = codec_config("tiny")
    assert t.frame_size == 1920 and t.frame_rate == 12.5
    with pytest.raises(ValueError, match="unknown codec config"):
        codec_config("huge")
    _check_entries_cover(MimiCodec(t))


def test_streaming_equals_whole_clip(tiny):
    pcm = speech_like(30 * FS, seed=1)
    with torch.inference_mode():
        whole = tiny.encode(pcm)
        codes, _ = _stream_encode(tiny, pcm)
        two, _ = _stream_encode(tiny, pcm, frames_per_call=2)  # several frames per call
        assert whole.shape == (1, 8, 30) and whole.dtype == torch.long
        assert torch.equal(codes, whole)
        assert torch.equal(two, whole)
        assert min(len(set(row.tolist())) for row in codes[0]) >= 4  # codes actually vary
        y_whole = tiny.decode(whole)
        y, _ = _stream_decode(tiny, whole)
    assert y.shape == (1, 1, 30 * FS)
    assert (y - y_whole).abs().max() < 1e-5


def test_partial_last_frame_is_zero_padded(tiny):
    pcm = speech_like(3 * FS + 100, seed=2)
    with torch.inference_mode():
        codes = tiny.encode(pcm)
        padded = torch.nn.functional.pad(pcm, (0, FS - 100))
        assert torch.equal(codes, tiny.encode(padded))
    assert codes.shape[-1] == 4


def test_state_is_static_and_separate(tiny):
    st0 = tiny.init_state(1)
    enc, dec = tiny.init_encoder_state(1), tiny.init_decoder_state(1)
    assert set(st0) == set(enc) | set(dec) and not set(enc) & set(dec)
    assert all(isinstance(v, torch.Tensor) for v in st0.values())
    pcm = speech_like(4 * FS, seed=3)
    with torch.inference_mode():
        st = st0
        for i in range(4):
            c, st = tiny.encode_step(pcm[..., i * FS:(i + 1) * FS], st)
            assert c.shape == (1, 8, 1)
            y, st = tiny.decode_step(c, st)
            assert y.shape == (1, 1, FS)
            for k, v in st.items():
                assert v.shape == st0[k].shape and v.dtype == st0[k].dtype, k
        # an encoder-only state works and stays encoder-only; the decoder state is passed through
        c, enc2 = tiny.encode_step(pcm[..., :FS], tiny.init_encoder_state(1))
        assert set(enc2) == set(enc)
        full = tiny.init_state(1)
        _, full2 = tiny.encode_step(pcm[..., :FS], full)
        assert all(full2[k] is full[k] for k in dec)


def test_batch_rows_are_independent(tiny):
    a, b = speech_like(6 * FS, seed=4), speech_like(6 * FS, seed=5) * 0.5
    with torch.inference_mode():
        both, _ = _stream_encode(tiny, torch.cat([a, b]))
        ca, _ = _stream_encode(tiny, a)
        cb, _ = _stream_encode(tiny, b)
        assert torch.equal(both, torch.cat([ca, cb]))
        ya, _ = _stream_decode(tiny, ca)
        yab, _ = _stream_decode(tiny, both)
    assert (yab[:1] - ya).abs().max() < 1e-5


def test_bad_inputs(tiny):
    st = tiny.init_state(1)
    with pytest.raises(ValueError, match="encode_step"):
        tiny.encode_step(torch.zeros(1, 1, 1000), st)
    with pytest.raises(ValueError, match="encode_step"):
        tiny.encode_step(torch.zeros(1, 2, FS), st)
    with pytest.raises(ValueError, match="codebooks"):
        tiny.decode_step(torch.zeros(1, 9, 1, dtype=torch.long), st)


def test_exact_window_after_wraparound():
    """With kv_capacity = context + 1, streaming equals whole-clip encoding beyond the ring's
    wrap-around (context 8 positions = 4 frames; 20 frames here)."""
    torch.manual_seed(3)
    codec = _random_codebooks(MimiCodec(MimiConfig.tiny(context=8, kv_capacity=9)))
    pcm = speech_like(20 * FS, seed=6)
    with torch.inference_mode():
        codes, _ = _stream_encode(codec, pcm)
        assert torch.equal(codes, codec.encode(pcm))
        y, _ = _stream_decode(codec, codes)
        assert (y - codec.decode(codes)).abs().max() < 1e-5


# ---- checkpoints ----------------------------------------------------------------------------

def test_kyutai_round_trip(tiny, tmp_path):
    sd = tiny.kyutai_state_dict()
    assert "encoder.model.0.conv.conv.weight" in sd
    assert "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight" in sd
    assert sd["decoder.model.2.convtr.convtr.weight"].shape == (64, 32, 16)
    path = tmp_path / "mimi.safetensors"
    save_safetensors(sd, path)
    other = MimiCodec.from_kyutai(path, MimiConfig.tiny())
    pcm = speech_like(3 * FS, seed=7)
    with torch.inference_mode():
        codes = tiny.encode(pcm)
        assert torch.equal(other.encode(pcm), codes)
        assert torch.equal(other.decode(codes), tiny.decode(codes))


def test_checkpoint_errors(tiny, tmp_path):
    sd = tiny.kyutai_state_dict()
    bad = dict(sd)
    del bad["decoder.model.0.conv.conv.bias"]
    del bad["quantizer.rvq_rest.vq.layers.3._codebook.embedding_sum"]
    bad["encoder.model.0.conv.conv.weight"] = torch.zeros(3, 1, 7)
    bad["something.else"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        MimiCodec(MimiConfig.tiny()).load_kyutai_state(bad, source="bad.safetensors")
    msg = str(err.value)
    assert "decoder.model.0.conv.conv.bias" in msg
    assert "quantizer.rvq_rest.vq.layers.3._codebook.embedding_sum" in msg
    assert "something.else" in msg
    assert "encoder.model.0.conv.conv.weight: [3, 1, 7] vs [4, 1, 7]" in msg
    assert err.value.missing and err.value.unexpected and err.value.mismatched
    # the tiny file into Kyutai's config: every shape differs, reported together
    with pytest.raises(CheckpointError, match="other shapes"):
        MimiCodec(MimiConfig.mimi()).load_kyutai_state(sd)
    # no pickle: a .pt file is refused before anything is read
    pt = tmp_path / "mimi.pt"
    torch.save(sd, pt)
    with pytest.raises(CheckpointError, match="safetensors"):
        MimiCodec.from_kyutai(pt, MimiConfig.tiny())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        MimiCodec.from_kyutai(junk, MimiConfig.tiny())


# ---- export ---------------------------------------------------------------------------------

def test_codec_graphs_export_with_torch_export(tiny):
    """The encoder/decoder step graphs the runtime exports go through torch.export unchanged."""
    from facebot.export.graphs import DecoderGraph, EncoderGraph, apply_slot_updates

    def next_state(graph, state, outs):
        """The state after a step: KV slots written into their rings, the rest replaced."""
        cur = dict(zip(graph.state_names, state))
        new = dict(zip(graph.state_names, outs[len(graph.data_outputs):]))
        apply_slot_updates(cur, {k: v for k, v in new.items() if k in graph.slot_rules},
                           graph.slot_rules, {})
        return [cur[k] if k in graph.slot_rules else new[k] for k in graph.state_names]

    enc, dec = EncoderGraph(tiny), DecoderGraph(tiny, tiny.num_codebooks)
    assert enc.state_names == list(tiny.init_encoder_state(1))
    with torch.no_grad():
        ep_enc = torch.export.export(enc, enc.example_inputs()).module()
        ep_dec = torch.export.export(dec, dec.example_inputs()).module()
        pcm = speech_like(3 * FS, seed=8)
        se, sx = list(enc.init_state().values()), list(enc.init_state().values())
        de, dx = list(dec.init_state().values()), list(dec.init_state().values())
        for i in range(3):
            frame = pcm[..., i * FS:(i + 1) * FS]
            oe, ox = enc(frame, *se), ep_enc(frame, *sx)
            assert torch.equal(oe[0], ox[0])
            se, sx = next_state(enc, se, oe), next_state(enc, sx, ox)
            ye, yx = dec(oe[0], *de), ep_dec(oe[0], *dx)
            assert (ye[0] - yx[0]).abs().max() < 1e-5
            de, dx = next_state(dec, de, ye), next_state(dec, dx, yx)
    assert math.isfinite(float(ye[0].abs().max()))
