"""Command-line flags onto the pipeline's one configuration (facebot.config.pipeline).

Each flag names the setting it changes in one table; a flag that was not given leaves the
config file's value. Errors name the flag.
"""
from __future__ import annotations

from pathlib import Path

from facebot.config.files import CONFIG_DIR
from facebot.config.pipeline import Override, PipelineConfig, load_pipeline_config
from facebot.config.schema import ConfigError

# argparse dest -> (setting, flag); store_true flags only override when given
FLAG_SETTINGS = {
    "backend": ("backend", "--backend"),
    "seed": ("seed", "--seed"),
    "head": ("head_config", "--head"),
    "display": ("display_config", "--display"),
    "weights": ("model.weights", "--weights"),
    "mimi_weights": ("model.mimi_weights", "--mimi-weights"),
    "tokenizer": ("model.tokenizer", "--tokenizer"),
    "temperature": ("model.temperature", "--temperature"),
    "top_k": ("model.top_k", "--top-k"),
    "greedy": ("model.greedy", "--greedy"),
    "weights_mode": ("model.weights_mode", "--weights-mode"),
    "threads": ("model.threads", "--threads"),
    "compile": ("model.compile", "--compile"),
    "face_weights": ("model.face_weights", "--face-weights"),
    "runtime": ("model.runtime", "--runtime"),
    "export_dir": ("model.export_dir", "--engine"),
    "precision": ("model.precision", "--precision"),
    "ort_device": ("model.device", "--ort-device"),
    "force_engine_update": ("model.force_engine_update", "--force-engine-update"),
    "verify_weights": ("model.verify_weights", "--verify-weights"),
    "echo_delay_ms": ("echo.echo_delay_ms", "--echo-delay-ms"),
}
# "--no-x" flags: given -> the setting is False
NEGATIVE_FLAGS = {
    "no_aec": ("echo.echo_cancellation", "--no-aec"),
    "no_noise_suppression": ("echo.noise_suppression", "--no-noise-suppression"),
    "no_high_pass": ("echo.high_pass_filter", "--no-high-pass"),
}
YAML_SUFFIXES = (".yaml", ".yml")


def config_paths(args) -> tuple[Path, str | None]:
    """(pipeline YAML, model config) from --config / --pipeline-config: --config is either."""
    yaml_arg, model_config = args.pipeline_config, None
    if args.config and Path(args.config).suffix in YAML_SUFFIXES:
        yaml_arg = yaml_arg or args.config
    elif args.config:
        if args.command != "export" and args.backend != "model":
            raise ConfigError(f"--config {args.config}: not a YAML file (model configs need --backend model)")
        model_config = args.config
    return (Path(yaml_arg) if yaml_arg else CONFIG_DIR / "facebot.yaml"), model_config


def overrides(args, model_config: str | None) -> list[Override]:
    """The flags that were given, as settings."""
    out = [] if model_config is None else [Override("model.config", model_config, "--config")]
    for dest, (key, flag) in FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        out.append(Override(key, value, flag))
    for dest, (key, flag) in NEGATIVE_FLAGS.items():
        if getattr(args, dest, False):
            out.append(Override(key, False, flag))
    if getattr(args, "export_dir", None) and not getattr(args, "runtime", None):
        out.append(Override("model.runtime", "onnxruntime", "--engine"))  # a folder of graphs runs on them
    return out


def pipeline_config(args) -> PipelineConfig:
    """The configuration of `run`, `bag`, `eval` and `export`: file, then flags."""
    path, model_config = config_paths(args)
    return load_pipeline_config(path, overrides(args, model_config))
