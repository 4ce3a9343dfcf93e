"""Settings of the model backend: which networks, which weights, where the step runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from facebot.config.schema import ConfigError, Settings, setting

RUNTIMES = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
WEIGHTS_MODES = ("none", "bf16", "int8")
ORT_DEVICES = ("cpu", "cuda")


@dataclass
class ModelOptions(Settings):
    config: str = "small"  # tiny | small | moshi-7b | path to a Kyutai config.json
    weights: Optional[str] = None  # Kyutai folder (model.safetensors, Mimi, tokenizer) or an LM .safetensors
    mimi_weights: Optional[str] = None  # default: the Mimi file in the weights folder
    tokenizer: Optional[str] = None  # default: the tokenizer in the weights folder
    temperature: float = setting(0.8, ge=0, le=2, doc="audio sampling temperature (0: greedy)")
    top_k: int = setting(250, ge=0, le=100_000, doc="audio top-k (0: the whole codebook)")
    temperature_text: float = setting(0.7, ge=0, le=2)
    top_k_text: int = setting(25, ge=0, le=100_000)
    greedy: bool = False
    weights_mode: Literal["none", "bf16", "int8"] = "none"  # torch runtime: fp32 | bf16 | weight-only int8
    threads: Optional[int] = setting(None, ge=1, le=1024, doc="torch intra-op threads (None: torch's choice)")
    init_seed: int = setting(0, ge=0, doc="random weights (when none are given) are drawn from this seed")
    compile: bool = False  # torch.compile the LM step (about a minute on 2 CPU cores, cached on disk)
    # Moshi-Face: "face_lm.safetensors,face_codec.safetensors" or a folder holding both; None:
    # the loop's procedural face
    face_weights: Optional[str] = None
    # where the step runs: torch (the model's own step) | onnxruntime | tensorrt (exported graphs)
    runtime: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    # graphs (+ engines/) folder: one that holds an export is started from alone (no torch model;
    # it must hold the model asked for), an empty one is exported into; None: the user cache
    export_dir: Optional[str] = None
    # exported graphs / engines (int8, int4: onnxruntime's weight-only MatMulNBits)
    precision: Literal["fp32", "fp16", "int8", "int4"] = "fp32"
    verify_weights: bool = False  # starting from a folder: re-hash the weight files, not only size + mtime
    device: Literal["cpu", "cuda"] = "cpu"  # onnxruntime: cpu | cuda (tensorrt is always cuda)
    force_engine_update: bool = False  # re-export the graphs and rebuild the engines

    def check(self) -> None:
        if not self.config.strip():
            raise ConfigError("config must name a model configuration (tiny, small, moshi-7b or a config.json)")
        if self.precision in ("int8", "int4") and self.runtime == "tensorrt":
            raise ConfigError(f"precision {self.precision}: graphs use onnxruntime's MatMulNBits; "
                              "TensorRT takes fp32 or fp16")
        if self.runtime != "torch" and self.weights_mode != "none":
            raise ConfigError("weights_mode is for the torch runtime; exported graphs take precision")
        if self.runtime != "torch" and self.compile:
            raise ConfigError("compile is for the torch runtime")
