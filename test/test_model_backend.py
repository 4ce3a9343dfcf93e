"""The `model` speech backend in the duplex loop (tiny config, random or saved weights)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from facebot import cli
from facebot.audio.framing import FRAME_NS, FRAME_SAMPLES, AudioFrame
from facebot.model.checkpoint import save_safetensors
from facebot.assembly import build_backend
from facebot.config.pipeline import PipelineConfig
from facebot.pipeline.duplex import DuplexLoop
from facebot.model.loading import ModelLoadError
from facebot.pipeline.model_backend import ModelBackend
from facebot.config.model import ModelOptions


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n * FRAME_SAMPLES) / 24000
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * rng.normal(size=t.size))
    return [AudioFrame(x[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES].astype(np.float32), k * FRAME_NS, k) for k in range(n)]


def run(backend, n=12, seed=0):
    loop = DuplexLoop(backend, seed=seed)
    return [loop.step(f) for f in frames(n)]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(["hello robot how are you", "i am fine thank you", "nice to meet you",
                                 "the face moves with the voice", "listen and talk at once"] * 20))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "tok"), vocab_size=32,
                                   model_type="unigram", bos_id=-1, eos_id=-1, unk_id=1, pad_id=3)
    return d / "tok.model"


def test_random_weights_run_and_say_so():
    backend = build_backend(PipelineConfig(backend="model", model=ModelOptions(config="tiny", greedy=True)))
    assert "RANDOM WEIGHTS" in backend.describe()
    results = run(backend)
    delay = backend.lm.cfg.max_delay
    assert all(np.abs(r.robot_audio).max() == 0 for r in results[:delay])  # nothing before the delays fill
    assert all(np.isfinite(r.robot_audio).all() and r.robot_audio.shape == (FRAME_SAMPLES,) for r in results)
    assert all(len(r.flame) == 2 and all(f.is_finite() for f in r.flame) for r in results)


def test_greedy_is_reproducible_and_seeds_matter():
    def audio(**kw):
        backend = ModelBackend(ModelOptions(config="tiny", **kw))
        return np.concatenate([r.robot_audio for r in run(backend)])

    assert np.array_equal(audio(greedy=True), audio(greedy=True))
    a = np.concatenate([r.robot_audio for r in run(ModelBackend(ModelOptions(config="tiny")), seed=1)])
    b = np.concatenate([r.robot_audio for r in run(ModelBackend(ModelOptions(config="tiny")), seed=1)])
    c = np.concatenate([r.robot_audio for r in run(ModelBackend(ModelOptions(config="tiny")), seed=2)])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_saved_weights_and_tokenizer_load(tmp_path, tokenizer_file):
    src = ModelBackend(ModelOptions(config="tiny", greedy=True))
    save_safetensors({k: v.contiguous() for k, v in src.lm.state_dict().items()}, tmp_path / "model.safetensors")
    loaded = ModelBackend(ModelOptions(config="tiny", greedy=True, weights=str(tmp_path / "model.safetensors"),
                                       tokenizer=str(tokenizer_file)))
    assert "RANDOM WEIGHTS" not in loaded.describe() and "RANDOM Mimi" in loaded.describe()
    for name, p in src.lm.state_dict().items():
        assert torch.equal(p, loaded.lm.state_dict()[name]), name
    assert loaded.tokenizer.vocab_size == 32
    texts = [r.output.text for r in run(loaded, n=20)]
    assert all(isinstance(t, str) for t in texts)


def test_partial_weights_are_refused_with_the_missing_keys(tmp_path):
    src = ModelBackend(ModelOptions(config="tiny"))
    sd = {k: v.contiguous() for k, v in src.lm.state_dict().items() if not k.startswith("linears.")}
    save_safetensors(sd, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="missing"):
        ModelBackend(ModelOptions(config="tiny", weights=str(tmp_path / "model.safetensors")))


def test_cli_model_backend_end_to_end(tmp_path, capsys):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.concatenate([f.samples for f in frames(25)]), 24000)
    out = tmp_path / "out"
    rc = cli.main(["run", "--backend", "model", "--config", "tiny", "--input", str(wav), "--out", str(out),
                   "--no-progress", "--no-video", "--greedy"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "RANDOM WEIGHTS" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"].startswith("model tiny") and summary["frames"] >= 25
    bad = cli.main(["run", "--backend", "model", "--config", "tiny", "--weights", str(tmp_path / "nope"),
                    "--input", str(wav), "--out", str(tmp_path / "o2"), "--no-video"])
    assert bad == 2 and "no such weights" in capsys.readouterr().err
    assert cli.main(["run", "--config", "tiny", "--input", str(wav), "--out", str(tmp_path / "o3")]) == 2


def test_small_config_runs_the_duplex_loop():
    backend = ModelBackend(ModelOptions(config="small", weights_mode="int8"))
    assert backend.lm.cfg.dim == 512 and "RANDOM WEIGHTS" in backend.describe()
    results = run(backend, n=6)
    assert all(np.isfinite(r.robot_audio).all() for r in results)
    assert np.abs(results[-1].robot_audio).max() > 0  # past the delays, the random voice sounds
