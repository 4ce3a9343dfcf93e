"""Deploying like a robot: start from an export folder alone (no torch model), refuse a folder
that holds another model with what differs, int4 weight-only graphs, and the unrolled depth
graph (tokens of the substep graph, every matmul quantizable). The tiny export is the
session's ``tiny_deployment`` (conftest.py)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from facebot import cli
from facebot.audio.framing import FRAME_SAMPLES
from facebot.export.graphs import DepthSubstepGraph
from facebot.export.onnx_export import derive_export
from facebot.export.traffic import traffic_table
from facebot.pipeline.backend import DuplexInput
from facebot.model.loading import ModelLoadError
from facebot.pipeline.model_backend import ModelBackend
from facebot.config.model import ModelOptions
from facebot.runtime.graph_runner import GraphSpec, OrtGraphRunner, TorchGraphRunner



def _inputs(n=10, seed=5):
    rng = np.random.default_rng(seed)
    return [DuplexInput(index=i, user_audio=(0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32),
                        capture_stamp_ns=i * 80_000_000) for i in range(n)]


def test_start_from_the_folder_alone_builds_no_torch_model(tiny_deployment, monkeypatch):
    import facebot.model.codec as codec_mod
    import facebot.model.lm as lm_mod

    def refuse(*a, **k):
        raise AssertionError("a torch network was built")

    manifest = json.loads((tiny_deployment["folder"] / "manifest.json").read_text())
    assert manifest["weight_sources"]["lm"]["path"] == str((tiny_deployment["dir"] / "model.safetensors").resolve())
    assert manifest["weight_sources"]["mimi"] == {"random_seed": 0}
    monkeypatch.setattr(lm_mod, "build_lm", refuse)
    monkeypatch.setattr(codec_mod.MimiCodec, "__init__", refuse)
    robot = ModelBackend(ModelOptions(**tiny_deployment["opts"], export_dir=str(tiny_deployment["folder"])))
    assert robot.lm is None and robot.codec is None
    assert f"from {tiny_deployment['folder']}" in robot.describe()
    built = tiny_deployment["built"]
    again = ModelBackend(ModelOptions(**tiny_deployment["opts"], export_dir=str(tiny_deployment["folder"])))
    built.reset(0)
    again.reset(0)
    for inp in _inputs():
        a, b, c = built.step(inp), robot.step(inp), again.step(inp)
        assert a.text == b.text and np.abs(a.audio - b.audio).max() <= 1e-4  # the torch model it was made from
        assert b.text == c.text and np.array_equal(b.audio, c.audio)  # two starts from the folder: identical
    robot.reset(0)  # a reset needs no torch model either
    with pytest.raises(ValueError, match="fixed in the exported graphs"):
        robot.update_options(top_k=3)


def test_a_folder_of_another_model_is_refused_naming_the_difference(tiny_deployment, tmp_path):
    opts, folder = tiny_deployment["opts"], str(tiny_deployment["folder"])
    with pytest.raises(ModelLoadError, match=r"precision: folder has 'fp32', requested 'int8'"):
        ModelBackend(ModelOptions(**{**opts, "precision": "int8"}, export_dir=folder))
    with pytest.raises(ModelLoadError, match=r"config\.card: folder has 40, requested 2048"):
        ModelBackend(ModelOptions(**{**opts, "config": "small"}, export_dir=folder))
    with pytest.raises(ModelLoadError, match=r"lm weights: folder made from .*model.safetensors.*requested random"):
        ModelBackend(ModelOptions(**{k: v for k, v in opts.items() if k != "weights"}, export_dir=folder))
    # other weights of the same size: found by their hash (the mtime differs, so the file is read)
    other = tmp_path / "other.safetensors"
    data = bytearray((tiny_deployment["dir"] / "model.safetensors").read_bytes())
    data[-1] ^= 1
    other.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"lm weights: .*other.safetensors \(blake2b \w+\) differs"):
        ModelBackend(ModelOptions(**{**opts, "weights": str(other)}, export_dir=folder))
    # the same bytes elsewhere (a copy with a new mtime): re-hashed once, accepted
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(tiny_deployment["dir"] / "model.safetensors", copy)
    assert ModelBackend(ModelOptions(**{**opts, "weights": str(copy)}, export_dir=folder)).lm is None


def test_size_and_mtime_are_trusted_unless_verify_is_asked(tiny_deployment, capfd):
    """Same size and mtime: the stored hash stands for the file (nothing read); --verify-weights
    re-hashes and so finds a change that kept both."""
    f = tiny_deployment["dir"] / "model.safetensors"
    saved, st = f.read_bytes(), f.stat()
    try:
        data = bytearray(saved)
        data[-1] ^= 1
        f.write_bytes(bytes(data))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        opts = {**tiny_deployment["opts"], "export_dir": str(tiny_deployment["folder"])}
        ModelBackend(ModelOptions(**opts))  # trusted: size + mtime match
        assert "hashing" not in capfd.readouterr().err
        with pytest.raises(ModelLoadError, match="differs"):
            ModelBackend(ModelOptions(**opts, verify_weights=True))
    finally:
        f.write_bytes(saved)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_unrolled_depth_graph_gives_the_substep_graphs_tokens(tiny_deployment):
    """The exported depth graph (all codebooks in one call, no weight gather) against the graph
    it replaced, greedy and sampled, on onnxruntime fp32: identical tokens."""
    lm = tiny_deployment["built"].lm
    m = json.loads((tiny_deployment["folder"] / "manifest.json").read_text())
    entry = m["graphs"]["depth"]
    assert entry["state"] == [] and "k" not in entry["data_inputs"]
    new = OrtGraphRunner(GraphSpec.from_folder(tiny_deployment["folder"], "depth", entry),
                         tiny_deployment["folder"] / entry["file"], threads=2)
    old = TorchGraphRunner(DepthSubstepGraph(lm, entry["top_k"]))
    g = torch.Generator().manual_seed(0)
    dep_q, width = lm.cfg.dep_q, entry["top_k"]
    seen = set()
    for t in range(40):
        h = 3 * torch.randn(1, lm.cfg.dim, generator=g)
        text = torch.randint(0, lm.cfg.text_card, (1,), generator=g)
        noise = torch.empty(1, dep_q, width).exponential_(1.0, generator=g) if t % 2 else torch.ones(1, dep_q, width)
        temp = torch.tensor([0.8 if t % 2 else 1.0])
        prev, ref = text, []
        for k in range(dep_q):
            prev = old.run(h=h, prev=prev, k=torch.tensor([k]), audio_noise=noise[:, k],
                           audio_temp=temp)["token"].clone()
            ref.append(prev)
        got = new.run(h=h, text=text, audio_noise=noise, audio_temp=temp)["tokens"]
        assert torch.equal(torch.stack(ref, 1), got), t
        seen.add(tuple(got[0].tolist()))
    assert len(seen) > 30  # the tokens move with the input: not a trivial agreement


def test_int4_quantizes_every_depth_matmul_and_starts_from_its_folder(tiny_deployment):
    import onnx
    from onnx import helper

    g4 = tiny_deployment["dir"] / "g4"
    m4 = derive_export(tiny_deployment["folder"], g4, "int4")
    m32 = json.loads((tiny_deployment["folder"] / "manifest.json").read_text())
    for name in ("depth", "temporal", "encoder"):
        bits, block = (8, 128) if name == "encoder" else (4, 128)  # Mimi keeps 8 bits (quantize.py)
        assert m4["graphs"][name]["weight_precision"] == f"int{bits}"
        model = onnx.load(str(g4 / m4["graphs"][name]["file"]))
        weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}  # matrices, not constants
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
        assert nbits and all(a["bits"] == bits and a["block_size"] == block for a in attrs), name
        # weight matmuls left in float (the RVQ's codebook distances, Gemm with alpha -2, are not one)
        float_mm = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights
                    and all(helper.get_attribute_value(a) == 1.0 for a in n.attribute if a.name == "alpha")]
        assert not float_mm, (name, [n.name for n in float_mm][:3])
    lm_cfg = tiny_deployment["built"].lm.cfg
    # depth: dep_q x layers x (qkv, out, gate in, gate out) + dep_q x (input proj, head)
    assert sum(1 for n in onnx.load(str(g4 / "depth.onnx")).graph.node if n.op_type == "MatMulNBits") == \
        lm_cfg.dep_q * (4 * lm_cfg.depformer_num_layers + 2)
    # 4 bits per weight (rows padded to whole blocks: the tiny model's rows of 32 fill a quarter)
    depth = onnx.load(str(g4 / "depth.onnx"))
    inits = {t.name: t for t in depth.graph.initializer}
    for n in (n for n in depth.graph.node if n.op_type == "MatMulNBits"):
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        w = inits[n.input[1]]
        assert w.data_type == onnx.TensorProto.UINT8
        assert list(w.dims) == [a["N"], -(-a["K"] // 128), 64], (n.name, list(w.dims))
    assert m4["graphs"]["depth"]["frame_bytes"] < m32["graphs"]["depth"]["frame_bytes"] / 1.8
    robot = ModelBackend(ModelOptions(**{**tiny_deployment["opts"], "precision": "int4"}, export_dir=str(g4)))
    outs = [robot.step(inp) for inp in _inputs(12)]
    assert "onnxruntime int4" in robot.describe()
    assert all(np.isfinite(o.audio).all() for o in outs) and max(np.abs(o.audio).max() for o in outs) > 0
    table = traffic_table(["tiny"], measured=[g4])
    assert "| tiny | int4 measured (g4 files, no face graphs) |" in table
    assert "KV cache at context 64 frames" in table


def test_cli_run_with_engine(tiny_deployment, tmp_path, capsys):
    import soundfile as sf

    wav = tmp_path / "in.wav"
    sf.write(wav, np.concatenate([i.user_audio for i in _inputs(15)]), 24000)
    rc = cli.main(["run", "--backend", "model", "--config", "tiny", "--weights",
                   str(tiny_deployment["dir"] / "model.safetensors"), "--greedy", "--engine", str(tiny_deployment["folder"]),
                   "--input", str(wav), "--out", str(tmp_path / "o"),
                   "--no-progress", "--no-video", "--head", "none"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert f"onnxruntime fp32 from {tiny_deployment['folder']}" in summary["backend"]
    rc = cli.main(["run", "--backend", "model", "--config", "tiny", "--greedy", "--precision", "int8",
                   "--engine", str(tiny_deployment["folder"]), "--input", str(wav), "--out", str(tmp_path / "o2"),
                   "--no-video", "--head", "none"])
    assert rc == 2 and "precision: folder has 'fp32', requested 'int8'" in capsys.readouterr().err
