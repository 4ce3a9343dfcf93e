"""Bad settings are refused once, where they enter, in one line naming the key (issue 12.6, 12.10).

Every case here used to run (a value silently wrong: the robot never replies, lips follow a
boolean) or end in a traceback minutes in. Each goes through the command line as a user
would type it and must end with ``facebot: error: ...`` naming the key, exit status 2, and
no output folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from facebot import cli, interfaces
from facebot.bagio import BagRecorder
from facebot.config.files import CONFIG_DIR
from facebot.config.pipeline import Override, PipelineConfig, apply_overrides, load_pipeline_config
from facebot.config.schema import ConfigError

T0 = 1_700_000_000_000_000_000


def pipeline_yaml(tmp_path: Path, **sections) -> Path:
    """The package's facebot.yaml with ``sections`` merged in (dotted keys allowed)."""
    data = yaml.safe_load((CONFIG_DIR / "facebot.yaml").read_text())
    for dotted, value in sections.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def refused(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err and err[-1].startswith("facebot: error:") and "Traceback" not in "\n".join(err), err
    for needle in needles:
        assert needle in err[-1], err[-1]
    return err[-1]


@pytest.mark.parametrize("key, value, needle", [
    ("scripted.turns.end_of_turn_ms", float("inf"), "end_of_turn_ms must be finite"),
    ("loop.face.lip_gain", True, "lip_gain must be a number"),
    ("loop.face.sample_rate", 48000, "unknown key(s) sample_rate"),
    ("loop.face.basis", {"jaw": [1, 2]}, "unknown key(s) basis"),
    ("loop.face.blink_interval_s", 3.0, "blink_interval_s must be a list of 2 values"),
    ("loop.face.blink_interval_s", [6.0, 2.0], "min <= max"),
    ("loop.vad_threshold", 1.5, "vad_threshold must be < 1"),
    ("loop.vad_echo_threshold", 0.0, "vad_echo_threshold must be > 0"),
    ("loop.playout_delay_ms", float("nan"), "playout_delay_ms must be finite"),
    ("scripted.rate_wpm", 1000, "rate_wpm must be <= 450"),
    ("scripted.rate_wpm", "fast", "rate_wpm must be an integer"),
    ("scripted.pitch", float("nan"), "pitch must be an integer"),
    ("scripted.replies", "just one string", "replies must be a list"),
    ("model.temperature", -1.0, "temperature must be >= 0"),
    ("model.runtime", "cuda", "runtime must be one of"),
    ("echo.echo_delay_ms", 1e300, "echo_delay_ms must be <= 3000"),
])
def test_a_bad_config_value_is_one_line_naming_the_file_and_key(tmp_path, capsys, key, value, needle):
    path = pipeline_yaml(tmp_path, **{key: value})
    rc = cli.main(["run", "--config", str(path), "--no-video", "--no-progress", "--out", str(tmp_path / "o")])
    line = refused(capsys, rc, needle, "bad.yaml:")
    assert key.split(".")[0] in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needle", [
    (["--temperature", "nan"], "--temperature"),
    (["--backend", "model", "--temperature", "-1"], "--temperature: temperature must be >= 0"),
    (["--backend", "model", "--top-k", "-1"], "--top-k: top_k must be >= 0"),
    (["--threads", "-1"], "--threads"),
    (["--t0-ns", "-5"], "--t0-ns"),
    (["--duration", "nan"], "--duration"),
    (["--backend", "model", "--runtime", "tensorrt", "--precision", "int4"], "TensorRT takes fp32 or fp16"),
])
def test_a_bad_flag_is_one_line(tmp_path, capsys, args, needle):
    try:
        rc = cli.main(["run", "--no-video", "--no-progress", "--out", str(tmp_path / "o"), *args])
    except SystemExit as exc:  # argparse's own one-line usage error, also exit 2
        rc = exc.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and needle in err[-1], err
    else:
        refused(capsys, rc, needle)
    assert not (tmp_path / "o").exists()


def test_corpus_refuses_a_nan_length(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["corpus", str(tmp_path / "c"), "--seconds", "nan"])
    assert exc.value.code == 2 and "--seconds" in capsys.readouterr().err


def test_an_unknown_espeak_voice_is_one_line(tmp_path, capsys):
    path = pipeline_yaml(tmp_path, **{"scripted.voice": "xx-nowhere"})
    rc = cli.main(["run", "--config", str(path), "--no-video", "--no-progress", "--out", str(tmp_path / "o")])
    refused(capsys, rc, "xx-nowhere")


@pytest.mark.parametrize("config", [{"context": 0}, {"dim": 64, "num_heads": 5}, {"num_layers": -2},
                                    {"hidden_scale": float("nan")}, "not json {"])
def test_a_bad_model_config_json_is_one_line(tmp_path, capsys, config):
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    rc = cli.main(["export", "--config", str(path), "--out", str(tmp_path / "x")])
    refused(capsys, rc, str(path))
    rc = cli.main(["run", "--backend", "model", "--config", str(path), "--no-video", "--out", str(tmp_path / "o")])
    refused(capsys, rc, str(path))


def test_impossible_stamps_and_empty_images_in_a_bag_are_dropped_and_counted(tmp_path):
    rate, chunk = 16000, 320
    t = np.arange(rate * 2) / rate
    audio = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    image_cls = interfaces.msg_class("sensor_msgs/msg/Image")
    path = tmp_path / "bag"
    with BagRecorder(path, {"/audio/in": "facebot/msg/AudioChunk", "/cam": "sensor_msgs/msg/Image"}) as bag:
        for i, start in enumerate(range(0, len(audio), chunk)):
            stamp = T0 + start * 1_000_000_000 // rate
            msg = interfaces.audio_to_msg(audio[start:start + chunk], rate, stamp)
            if i == 10:
                msg.header.stamp.nanosec = 2_000_000_000
            bag.write("/audio/in", stamp, msg)
            if i % 10 == 0:  # 0x0 images; one with a nanosec past 1e9
                header = interfaces.make_header(stamp, "camera")
                if i == 20:
                    header.stamp.nanosec = 3_000_000_000
                bag.write("/cam", stamp, image_cls(header=header, height=0, width=0, encoding="rgb8", is_bigendian=0, step=0,
                                                   data=np.zeros(0, np.uint8)))
    out = tmp_path / "o"
    assert cli.main(["bag", str(path), "--camera-topic", "/cam", "--no-video", "--no-progress",
                     "--out", str(out)]) == 0
    counters = json.loads((out / "summary.json").read_text())["counters"]
    assert counters["input_dropped_bad_stamp"] == 1, counters
    assert counters["camera_dropped"] == len(range(0, len(audio), chunk * 10)), counters  # every image


def test_a_section_applies_its_overrides_together():
    """Flags of one section are applied at once: no order-dependent refusal in between."""
    config = load_pipeline_config(CONFIG_DIR / "facebot.yaml",
                                  [Override("model.runtime", "tensorrt", "--runtime")])
    config = apply_overrides(config, [Override("model.precision", "int8", "--precision"),
                                      Override("model.runtime", "onnxruntime", "--runtime")])
    assert (config.model.runtime, config.model.precision) == ("onnxruntime", "int8")
    with pytest.raises(ConfigError, match="--nope: no setting 'loop.nope'"):
        apply_overrides(PipelineConfig(), [Override("loop.nope", 1, "--nope")])


def test_weights_holding_nan_are_refused_naming_the_tensor(tmp_path, capsys):
    """Issue 12.10: all-NaN weights ran, and the robot said nothing while looking alive."""
    import torch

    from facebot.config.model import ModelOptions
    from facebot.model.checkpoint import save_safetensors
    from facebot.pipeline.model_backend import ModelBackend

    state = {k: v.contiguous().clone() for k, v in ModelBackend(ModelOptions(config="tiny")).lm.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    save_safetensors(state, tmp_path / "model.safetensors")
    rc = cli.main(["run", "--backend", "model", "--config", "tiny", "--weights", str(tmp_path / "model.safetensors"),
                   "--no-video", "--no-progress", "--out", str(tmp_path / "o")])
    refused(capsys, rc, name, "NaN")


def test_a_head_input_limit_out_of_range_is_one_line(tmp_path, capsys):
    """Issue 12.6: `input.max_ahead_s: 1e300` overflowed mid-run."""
    data = yaml.safe_load((CONFIG_DIR / "head_reference.yaml").read_text())
    data["head"].setdefault("input", {})["max_ahead_s"] = 1e300
    path = tmp_path / "head.yaml"
    path.write_text(yaml.safe_dump(data))
    rc = cli.main(["run", "--head", str(path), "--no-video", "--no-progress", "--out", str(tmp_path / "o")])
    refused(capsys, rc, "max_ahead_s must be <= 3600")
