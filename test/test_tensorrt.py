"""The TensorRT runtime. Without TensorRT and a GPU: availability reporting, the engine keys of an
export, the precision rules, Q/DQ detection and the engine/spec I/O check. With them: the tiny
model's graphs as engines give the torch graphs' tokens (and audio within 1e-3 in fp32) over 20
frames, a second load takes the engines from the cache, and force_engine_update rebuilds."""
import json

import numpy as np
import pytest
import torch

from facebot.runtime import tensorrt_runtime as trt_rt
from facebot.runtime.engine_cache import EngineCache, config_hash
from facebot.runtime.graph_runner import GraphSpec
from facebot.runtime.tensorrt_runtime import (builder_options, check_engine_io, engine_key_for,
                                              has_qdq_nodes, load_trt_runners, network_mode,
                                              tensorrt_available)

AVAILABLE, WHY = tensorrt_available()
needs_trt = pytest.mark.skipif(not AVAILABLE, reason=f"TensorRT runtime unavailable: {WHY}")
FRAMES = 20


# ---- without TensorRT -----------------------------------------------------------------------------
def test_availability_says_what_is_missing(monkeypatch):
    assert isinstance(AVAILABLE, bool) and WHY
    print("tensorrt_available:", AVAILABLE, WHY)

    def no_trt():
        raise ImportError("No module named 'tensorrt'")

    monkeypatch.setattr(trt_rt, "_trt", no_trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = tensorrt_available()
    assert not ok
    assert "tensorrt is not importable" in why and "no CUDA device" in why
    with pytest.raises(RuntimeError, match="TensorRT runtime unavailable"):
        load_trt_runners("unused", {"graphs": {}}, EngineCache("unused"))


def _export(folder, external=False):
    (folder / "temporal.onnx").write_bytes(b"graph bytes")
    entry = {"file": "temporal.onnx", "external_data": None, "inputs": [], "outputs": []}
    if external:
        (folder / "temporal.onnx.data").write_bytes(b"weight bytes")
        entry["external_data"] = "temporal.onnx.data"
    manifest = {"format": 1, "precision": "fp16", "weights_hash": "abc123",
                "config": {"dim": 64, "name": "tiny"}, "graphs": {"temporal": entry}}
    return entry, manifest


def test_engine_key_from_manifest(tmp_path):
    entry, manifest = _export(tmp_path, external=True)
    opts = builder_options(1 << 30, 3)
    key = engine_key_for(tmp_path, "temporal", entry, manifest, None, "10.3.0", "GPU sm_90", opts)
    assert key.graph == "temporal"
    assert key.weights_hash == "abc123"
    assert key.config_hash == config_hash({"name": "tiny", "dim": 64})
    assert key.precision == "fp16"  # the export's own when none is asked for
    assert (key.trt_version, key.gpu) == ("10.3.0", "GPU sm_90")
    assert dict(key.options) == {"workspace_bytes": 1 << 30, "opt_level": 3, "recipe": trt_rt.RECIPE}
    # a manifest read back from disk gives the same key
    back = json.loads(json.dumps(manifest))
    assert engine_key_for(tmp_path, "temporal", entry, back, None, "10.3.0", "GPU sm_90", opts) == key
    # the external weights are part of the ONNX hash; the precision asked for goes in the key
    (tmp_path / "temporal.onnx.data").write_bytes(b"other weights")
    changed = engine_key_for(tmp_path, "temporal", entry, manifest, "int8", "10.3.0", "GPU sm_90", opts)
    assert changed.onnx_hash != key.onnx_hash and changed.precision == "int8"
    assert EngineCache(tmp_path).explain_miss(changed) == "no engine for graph temporal yet"


def test_network_modes():
    assert network_mode("fp32", "fp32") == (True, False)
    assert network_mode("fp16", "fp16") == (True, False)
    assert network_mode("fp16", "fp32") == (False, True)
    for q in ("int8", "fp8", "int4"):
        assert network_mode(q, "fp16") == (True, False)
    with pytest.raises(ValueError, match="fp32 export"):
        network_mode("fp32", "fp16")
    with pytest.raises(ValueError, match="precision must be"):
        network_mode("bf8", "fp32")


def test_qdq_detection(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def save(nodes, name):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                 helper.make_tensor("z", TensorProto.INT8, [], [0])]
        graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
        path = tmp_path / name
        onnx.save(helper.make_model(graph), str(path))
        return path

    plain = save([helper.make_node("Relu", ["x"], ["y"])], "plain.onnx")
    qdq = save([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq.onnx")
    assert not has_qdq_nodes(plain)
    assert has_qdq_nodes(qdq)


def _spec():
    io = lambda name, shape, dt: {"name": name, "shape": shape, "dtype": dt}  # noqa: E731
    entry = {"inputs": [io("h", [1, 8], "float32"), io("k", [1], "int64"), io("state.c", [1, 2], "float32")],
             "outputs": [io("token", [1], "int64"), io("next.c", [1, 2], "float32")],
             "data_inputs": ["h", "k"], "data_outputs": ["token"], "state": ["c"], "slots": {}}
    return GraphSpec("depth", entry, {})


def _io():
    return {"h": ("input", (1, 8), torch.float32), "k": ("input", (1,), torch.int64),
            "state.c": ("input", (1, 2), torch.float32), "token": ("output", (1,), torch.int64),
            "next.c": ("output", (1, 2), torch.float32)}


def test_engine_io_check():
    spec = _spec()
    assert check_engine_io(spec, _io()) == []
    io = _io()
    del io["k"]  # TensorRT drops inputs nothing reads: tolerated, reported
    assert check_engine_io(spec, io) == ["k"]
    for change, message in [({"h": ("input", (1, 16), torch.float32)}, r"h shape \(1, 16\) != \(1, 8\)"),
                            ({"k": ("input", (1,), torch.int32)}, "k dtype torch.int32 != torch.int64"),
                            ({"token": ("input", (1,), torch.int64)}, "token is an engine input"),
                            ({"extra": ("output", (1,), torch.float32)}, "extra is not in the graph")]:
        with pytest.raises(ValueError, match=message):
            check_engine_io(spec, {**_io(), **change})
    io = _io()
    del io["next.c"]
    with pytest.raises(ValueError, match="output next.c missing"):
        check_engine_io(spec, io)


# ---- with TensorRT and a GPU ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from facebot.export.graphs import build_graphs
    from facebot.export.onnx_export import export_graphs, weights_hash
    from facebot.model.codec import MimiCodec, codec_config
    from facebot.model.lm import build_lm
    from facebot.model.sampling import SamplingConfig

    torch.manual_seed(0)
    codec = MimiCodec(codec_config("tiny")).eval()
    for m in codec.modules():
        if hasattr(m, "set_codebooks"):
            m.set_codebooks(torch.randn_like(m.codebooks))
    lm = build_lm("tiny").eval()
    sampling = SamplingConfig.greedy()
    graphs = build_graphs(codec, lm, sampling.top_k_text, sampling.top_k)
    folder = tmp_path_factory.mktemp("export")
    manifest = export_graphs(graphs, folder, {"config": "tiny", "weights_hash": weights_hash([codec, lm])},
                             log=lambda s: None)
    g = torch.Generator().manual_seed(1)
    pcms = [torch.randn(1, 1, 1920, generator=g) * 0.1 for _ in range(FRAMES)]
    return folder, manifest, graphs, lm.cfg, sampling, pcms


def _run(runners, cfg, sampling, pcms):
    from facebot.runtime.graph_loop import GraphDuplexStep

    loop = GraphDuplexStep(runners, cfg, sampling)
    loop.reset()
    return [loop.step(p) for p in pcms]


@pytest.fixture(scope="module")
def reference(tiny_export):
    from facebot.runtime.graph_runner import TorchGraphRunner

    folder, manifest, graphs, cfg, sampling, pcms = tiny_export
    return _run({n: TorchGraphRunner(g) for n, g in graphs.items()}, cfg, sampling, pcms)


def _counting_builds(monkeypatch):
    calls = []
    real = trt_rt.build_engine

    def counted(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(trt_rt, "build_engine", counted)
    return calls


@needs_trt
def test_fp32_engines_match_torch_graphs_and_cache(tiny_export, reference, tmp_path, monkeypatch):
    folder, manifest, graphs, cfg, sampling, pcms = tiny_export
    cache, builds = EngineCache(tmp_path / "engines"), _counting_builds(monkeypatch)
    quiet = dict(workspace_bytes=1 << 30, log=lambda s: None)
    runners = load_trt_runners(folder, manifest, cache, "fp32", **quiet)
    assert len(builds) == len(manifest["graphs"])
    got = _run(runners, cfg, sampling, pcms)
    assert sum(r.valid for r in reference) > 0
    for ref, out in zip(reference, got):
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        assert out.valid == ref.valid
        if ref.audio is not None:
            np.testing.assert_allclose(out.audio, ref.audio, atol=1e-3, rtol=0)
    assert cache.timing_cache_path(trt_rt.trt_version(), trt_rt.gpu_identity()).is_file()

    again = load_trt_runners(folder, manifest, cache, "fp32", **quiet)
    assert len(builds) == len(manifest["graphs"])  # all from the cache
    for ref, out in zip(reference, _run(again, cfg, sampling, pcms)):
        np.testing.assert_array_equal(out.tokens, ref.tokens)

    load_trt_runners(folder, manifest, cache, "fp32", force_engine_update=True, **quiet)
    assert len(builds) == 2 * len(manifest["graphs"])


@needs_trt
def test_fp16_engines_run(tiny_export, reference, tmp_path):
    import tensorrt as trt

    if not hasattr(trt.BuilderFlag, "FP16"):
        pytest.skip("this TensorRT builds fp16 only from an fp16 export")
    folder, manifest, graphs, cfg, sampling, pcms = tiny_export
    runners = load_trt_runners(folder, manifest, EngineCache(tmp_path), "fp16", log=lambda s: None)
    got = _run(runners, cfg, sampling, pcms)
    assert [r.valid for r in got] == [r.valid for r in reference]
    audio = [r.audio for r in got if r.audio is not None]
    assert audio and all(np.isfinite(a).all() for a in audio)
