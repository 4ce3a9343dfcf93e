"""ONNX export and the onnxruntime runtime: the exported graphs against the model's own torch
step over 50 streamed frames (greedy and sampled, with the face model), the manifest and its
reuse, external data, fp16, and the model backend on the onnxruntime runtime."""
import numpy as np
import pytest
import torch

from facebot.export.graphs import TemporalGraph
from facebot.export.model_export import ensure_export, model_identity
from facebot.export.onnx_export import ManifestError, export_graph, read_manifest
from facebot.export.verify import differences, graph_steps, speechlike_signal, torch_reference_steps
from facebot.model.codec import MimiCodec, codec_config
from facebot.model.face_codec import FaceCodec, FaceCodecConfig
from facebot.model.face_transformer import FaceLM, FaceTransformerConfig
from facebot.model.lm import build_lm
from facebot.model.sampling import SamplingConfig
from facebot.model.transformer import StreamingTransformer, TransformerConfig, slot_updates
from facebot.runtime.face_lm_step import FaceLMStep
from facebot.runtime.graph_loop import GraphDuplexStep
from facebot.runtime.graph_runner import GraphSpec, OrtGraphRunner, TorchGraphRunner
from facebot.runtime.lm_step import LMStep
from facebot.runtime.model_runtime import load_ort_runners

FRAMES = 50
N_FACE, K_FACE = 4, 16


def _model(seed=0):
    torch.manual_seed(seed)
    codec = MimiCodec(codec_config("tiny")).eval()
    for m in codec.modules():  # random codebooks: the decoded audio depends on every token
        if hasattr(m, "set_codebooks"):
            m.set_codebooks(torch.randn_like(m.codebooks))
    lm = build_lm("tiny").eval()
    face_codec = FaceCodec(FaceCodecConfig(hidden=32, codebook_size=K_FACE, codebook_dim=8,
                                           num_tokens=N_FACE, dim_feedforward=64)).eval()
    face_lm = FaceLM(FaceTransformerConfig(dim_in=lm.cfg.dim, dim=32, num_layers=2, num_heads=4,
                                           num_tokens=N_FACE, codebook_size=K_FACE),
                     zero_init_streams=False).eval()
    return codec, lm, face_lm, face_codec


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model with a face model, exported once (about 30 s)."""
    codec, lm, face_lm, face_codec = _model()
    sampling = SamplingConfig(top_k=50, top_k_text=10)
    folder = tmp_path_factory.mktemp("graphs")
    folder, manifest = ensure_export(folder, codec, lm, sampling, "fp32", face_lm, face_codec,
                                     face_top_k=0, log=lambda m: None)
    return {"folder": folder, "manifest": manifest, "codec": codec, "lm": lm, "face_lm": face_lm,
            "face_codec": face_codec, "sampling": sampling}


def _compare(exported, sampling, face_temp=0.0, seed=3):
    e = exported
    stepper = LMStep(e["lm"], sampling)
    face = FaceLMStep(stepper, e["face_lm"], e["face_codec"], face_temp=face_temp,
                      face_top_k=0)
    pcms = speechlike_signal(FRAMES, e["codec"].frame_size, seed)
    ref = torch_reference_steps(e["codec"], stepper, pcms, seed, face)
    loop = GraphDuplexStep(load_ort_runners(e["folder"], e["manifest"], threads=2), e["lm"].cfg,
                           sampling, face_temp=face_temp)
    return ref, graph_steps(loop, pcms, seed)


def test_slot_updates_equal_in_place_writes_across_wraparound():
    """The exported attention form (read the ring where it lies, write the new slots outside
    the graph) sees exactly the keys of the in-place step, for 1..3 new positions per call and
    through 10+ wrap-arounds of the ring."""
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, causal=True,
                            context=6, positional_embedding="rope")
    tf = StreamingTransformer(cfg).eval()
    for T in (1, 2, 3):
        s1, s2 = tf.init_state(1), tf.init_state(1)
        for _ in range(25):
            x = torch.randn(1, T, 32)
            y1, s1 = tf.step(x, s1)
            with slot_updates(tf):
                y2, upd = tf.step(x, s2)
            idx = torch.remainder(s2["offset"] + torch.arange(T), tf.capacity)
            for k in s2:
                if k != "offset":
                    assert upd[k].shape[2] == T
                    s2[k].index_copy_(2, idx, upd[k])
            s2["offset"] = upd["offset"]
            assert torch.allclose(y1, y2, atol=1e-5), T
        assert tf.kv_update == "inplace"  # the context manager restores the module


def test_onnxruntime_matches_torch_greedy_over_50_frames(exported):
    ref, ort = _compare(exported, SamplingConfig(use_sampling=False, top_k=50, top_k_text=10))
    d = differences(ref, ort)
    assert sum(r.valid for r in ref) == FRAMES - exported["lm"].cfg.max_delay
    assert d["token_frames_differing"] == 0 and d["valid_differing"] == 0, d
    assert d["audio_max_abs"] <= 1e-4, d
    assert d["face_max_abs"] <= 1e-5, d
    # not a trivial agreement: the tokens and the face move
    assert len({tuple(r.tokens) for r in ref if r.valid}) > 5
    assert np.std([r.face for r in ref], axis=0).max() > 1e-3


def test_onnxruntime_matches_torch_sampled_with_the_same_seed(exported):
    sp = exported["sampling"]  # temperature 0.8 / 0.7, top-k 50 / 10: the graphs' widths
    ref, ort = _compare(exported, sp, face_temp=0.9)
    d = differences(ref, ort)
    assert d["token_frames_differing"] == 0, d
    assert d["audio_max_abs"] <= 1e-4 and d["face_max_abs"] <= 1e-5, d
    greedy, _ = _compare(exported, SamplingConfig(use_sampling=False, top_k=50, top_k_text=10))
    assert differences(ref, greedy)["token_frames_differing"] > 0  # sampling really sampled


def test_every_graph_has_explicit_static_state_and_a_manifest(exported):
    m = exported["manifest"]
    assert set(m["graphs"]) == {"encoder", "temporal", "depth", "decoder", "face_embed", "face_head"}
    ident = model_identity(exported["codec"], exported["lm"], exported["sampling"], "fp32",
                           exported["face_lm"], exported["face_codec"])
    for key in ("config", "weights_hash", "sampling", "codec"):
        assert m[key] == ident[key]
    assert m["opset"] >= 17 and m["precision"] == "fp32"
    import onnx

    for name, g in m["graphs"].items():
        model = onnx.load(str(exported["folder"] / g["file"]))
        ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        outs = {o.name for o in model.graph.output}
        for s in g["state"]:
            assert "state." + s in ins and all(v > 0 for v in ins["state." + s])  # static shapes
            assert ("slot." + s in outs) != ("next." + s in outs)
        # KV rings come back as their new slots only; no graph returns a whole cache
        for s, rule in g["slots"].items():
            assert ins["state." + s][2] == rule["capacity"]
    temporal = m["graphs"]["temporal"]
    assert temporal["slots"] and all(r["offset_state"] == "offset" for r in temporal["slots"].values())
    assert all(r["index_input"] == "k" for r in m["graphs"]["depth"]["slots"].values())


def test_onnx_graphs_do_not_copy_the_kv_cache(exported):
    """The ops that would rewrite a whole cache per frame (scatter / in-graph concat of the
    cache with the new slot) are absent from the attention graphs."""
    import onnx

    for name in ("temporal", "depth", "encoder", "decoder"):
        g = exported["manifest"]["graphs"][name]
        model = onnx.load(str(exported["folder"] / g["file"]))
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"ScatterElements", "ScatterND"}, (name, ops & {"ScatterElements", "ScatterND"})
        # and nothing TensorRT lacks: no float64 (RoPE angles are split into float32 parts)
        casts = [a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
        assert onnx.TensorProto.DOUBLE not in casts, name
        assert all(t.data_type != onnx.TensorProto.DOUBLE for t in model.graph.initializer), name


def test_export_is_reused_until_weights_config_or_precision_change(exported, tmp_path):
    e = exported
    folder = e["folder"]
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    calls = []
    again, _ = ensure_export(folder, e["codec"], e["lm"], e["sampling"], "fp32", e["face_lm"],
                             e["face_codec"], log=calls.append)
    assert again == folder and not calls and (folder / "manifest.json").stat().st_mtime_ns == stamp
    ident = model_identity(e["codec"], e["lm"], e["sampling"], "fp32", e["face_lm"], e["face_codec"])
    with pytest.raises(ManifestError, match="weights_hash"):
        read_manifest(folder, expect={**ident, "weights_hash": "0" * 32})
    with pytest.raises(ManifestError, match="precision"):
        read_manifest(folder, expect={**ident, "precision": "fp16"})
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path)
    # one changed weight changes the hash
    lm2 = build_lm("tiny").eval()
    lm2.load_state_dict(e["lm"].state_dict())
    with torch.no_grad():
        lm2.text_linear.weight[0, 0] += 1e-3
    assert model_identity(e["codec"], lm2, e["sampling"])["weights_hash"] != ident["weights_hash"]


def test_external_data_fp16_and_int8_graphs_load_and_run(tmp_path):
    torch.manual_seed(0)
    lm = build_lm("tiny").eval()
    graph = TemporalGraph(lm, 10)
    ext = export_graph(graph, tmp_path / "temporal.onnx", external_data_threshold=0)
    assert ext["external_data"] == "temporal.onnx.data"
    assert (tmp_path / "temporal.onnx.data").stat().st_size > 0.9 * ext["weight_bytes"]
    assert (tmp_path / "temporal.onnx").stat().st_size < (tmp_path / "temporal.onnx.data").stat().st_size
    half = export_graph(graph, tmp_path / "temporal16.onnx", precision="fp16")
    assert {i["dtype"] for i in half["inputs"] if i["name"].startswith("state.layers")} == {"float16"}
    q8 = export_graph(graph, tmp_path / "temporal8.onnx", precision="int8")
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "temporal8.onnx")).graph.node]
    assert ops.count("MatMulNBits") >= 4 * lm.cfg.num_layers and "Gemm" not in ops
    ref = TorchGraphRunner(graph)
    runners = [OrtGraphRunner(GraphSpec.from_folder(tmp_path, "temporal", e), tmp_path / e["file"], threads=1)
               for e in (ext, half, q8)]
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        data = dict(tokens=torch.randint(0, lm.cfg.card, (1, lm.cfg.num_codebooks), generator=g),
                    extra=torch.zeros(1, lm.cfg.dim), text_noise=torch.ones(1, 10), text_temp=torch.ones(1))
        h = ref.run(**data)["h"].clone()
        h32 = runners[0].run(**data)["h"]
        h16 = runners[1].run(**data)["h"].float()
        h8 = runners[2].run(**data)["h"]
        assert torch.allclose(h, h32, atol=1e-5)
        assert (h - h16).abs().max() < 0.05 * h.abs().max()  # fp16: close, not exact
        assert (h - h8).abs().max() < 0.1 * h.abs().max()  # int8 weights and int8 compute


def test_model_backend_runs_on_onnxruntime(tiny_deployment):
    """`--runtime onnxruntime`: the export step exported into the folder given (the session's
    ``tiny_deployment``), and the backend on that folder gives the torch runtime's output frame
    for frame."""
    from facebot.pipeline.backend import DuplexInput
    from facebot.pipeline.model_backend import ModelBackend
    from facebot.config.model import ModelOptions

    opts, folder = tiny_deployment["opts"], tiny_deployment["folder"]
    torch_be = tiny_deployment["built"]
    torch_be.reset(0)
    ort_be = ModelBackend(ModelOptions(**opts, export_dir=str(folder)))
    assert (folder / "manifest.json").is_file()
    assert "onnxruntime fp32" in ort_be.describe()
    pcms = speechlike_signal(12, 1920, 5)
    for i, pcm in enumerate(pcms):
        a = torch_be.step(DuplexInput(index=i, user_audio=pcm, capture_stamp_ns=i * 80_000_000))
        b = ort_be.step(DuplexInput(index=i, user_audio=pcm, capture_stamp_ns=i * 80_000_000))
        assert a.text == b.text
        assert np.abs(a.audio - b.audio).max() <= 1e-4
    sampled = ModelBackend(ModelOptions(**{**opts, "greedy": False}, export_dir=str(folder)))  # same widths: reused
    with pytest.raises(ValueError, match="fixed in the exported graphs"):
        sampled.update_options(top_k=7)
    sampled.update_options(temperature=0.5)  # live temperature changes need no new graph
    assert sampled.graph_step.sampling.temp == 0.5


def test_user_face_tokens_reach_the_graphs_as_the_torch_step(exported):
    """The user's face stream (perceived frames -> face codec tokens, no-face token without a
    face) enters the face_embed graph exactly as it enters the torch step."""
    from facebot.runtime.user_face import UserFaceEncoder

    e = exported
    sampling = SamplingConfig.greedy()
    face = FaceLMStep(LMStep(e["lm"], sampling), e["face_lm"], e["face_codec"])
    loop = GraphDuplexStep(load_ort_runners(e["folder"], e["manifest"], threads=2), e["lm"].cfg, sampling)
    loop.reset(0)
    pcms = speechlike_signal(8, e["codec"].frame_size, 4)
    rng = np.random.default_rng(0)
    enc_t, enc_g = (UserFaceEncoder(e["face_codec"], K_FACE) for _ in range(2))
    state, mimi = face.init_state(1), e["codec"].init_encoder_state(1)
    with torch.inference_mode():
        for i, pcm in enumerate(pcms):
            from facebot.face.flame import FlameFrame
            frames = None if i in (2, 3) else [FlameFrame.from_core(rng.normal(0, 0.5, 56)) for _ in range(2)]
            codes, mimi = e["codec"].encode_step(torch.from_numpy(pcm).view(1, 1, -1), mimi)
            user = enc_t.step(frames)
            assert (user == K_FACE).all() == (frames is None)
            _, _, ft, f_torch, state = face.step(codes[:, :, 0], user, state, face.draw_noise(1))
            res = loop.step(pcm, enc_g.step(frames))
            assert np.abs(res.face - f_torch[0].numpy()).max() < 1e-4
            assert torch.equal(loop.face_prev, ft)
