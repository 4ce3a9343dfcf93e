"""Expensive artefacts made once per test session and shared read-only by the test files.

A test that changes one of these folders works on a copy (or restores what it touched), so
that no test depends on another's side effects or on the order the files run in.
"""
import json
import sys

import pytest

T0 = 1_700_000_000_000_000_000  # the capture time the sample run starts at


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts with one torch intra-op thread. The test models are far too small to
    gain from a second thread, and on a busy 2-core machine a second spinning thread costs up
    to 30 times the CPU time; a test that wants more threads sets them itself."""
    torch = sys.modules.get("torch")  # tests that never import torch do not pay for it here
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_deployment(tmp_path_factory):
    """Tiny LM weights in a file, exported by `facebot export` into ``folder`` (~30 s);
    ``built`` is the torch runtime on the same weights (the model the folder was made from):
    call ``reset`` before stepping it."""
    from facebot import cli
    from facebot.config.model import ModelOptions
    from facebot.model.checkpoint import save_safetensors
    from facebot.pipeline.model_backend import ModelBackend

    d = tmp_path_factory.mktemp("deploy")
    src = ModelBackend(ModelOptions(config="tiny", init_seed=3))
    save_safetensors({k: v.contiguous() for k, v in src.lm.state_dict().items()}, d / "model.safetensors")
    opts = dict(config="tiny", weights=str(d / "model.safetensors"), greedy=True, runtime="onnxruntime", threads=1)
    assert cli.main(["export", "--config", "tiny", "--weights", str(d / "model.safetensors"), "--greedy",
                     "--threads", "1", "--out", str(d / "g")]) == 0  # builds torch, exports
    built = ModelBackend(ModelOptions(**{**opts, "runtime": "torch"}))
    return {"dir": d, "folder": d / "g", "opts": opts, "built": built}


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The README's main job: `facebot run` with no input, on a fresh cache (the sample
    conversation is made on first use). Returns the output folder and the sample's layout."""
    from facebot import cli

    root = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    try:
        rc = cli.main(["run", "--out", str(root / "out"), "--t0-ns", str(T0), "--no-progress"])
    finally:
        mp.undo()
    assert rc == 0
    sample = root / "cache" / "facebot" / "sample_conversation.wav"
    assert sample.is_file(), "the default input is made on first use"
    return root / "out", json.loads(sample.with_suffix(".json").read_text())
