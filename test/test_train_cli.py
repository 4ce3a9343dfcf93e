"""`facebot corpus` and `facebot train codec` from the command line, on a tiny corpus."""
import json

from facebot import cli


def test_corpus_then_codec_training_and_resume(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    assert cli.main(["corpus", str(corpus), "--dialogues", "3", "--seconds", "10"]) == 0
    assert cli.main(["corpus", str(corpus)]) == 2  # never overwritten
    out = tmp_path / "codec"
    args = ["train", "codec", "--data", str(corpus), "--out", str(out), "--batch", "4",
            "--codebook-size", "32", "--codebook-dim", "16"]
    assert cli.main(args + ["--steps", "20"]) == 0
    assert (out / "face_codec.safetensors").is_file() and (out / "codec_last.safetensors").is_file()
    assert cli.main(args + ["--steps", "30", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert max(steps) == 30
    assert "normalised perplexity" in capsys.readouterr().out


def test_training_on_a_missing_corpus_is_refused(tmp_path, capsys):
    assert cli.main(["train", "codec", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err


def test_train_face_prints_the_system_table(tmp_path, capsys):
    out = tmp_path / "face"
    assert cli.main(["train", "face", "--out", str(out), "--dialogues", "3", "--seconds", "8",
                     "--steps", "4", "--codec-steps", "4"]) == 0
    table = capsys.readouterr().out
    for row in ("reconstructed face", "random face", "ours", "w/o previous-frame face tokens"):
        assert row in table
    assert (out / "table.json").is_file() and (out / "ckpt" / "stage3.safetensors").is_file()
