"""Bytes read per 80 ms frame, per config and weight precision, against Jetson memory bandwidth.

Batch-1 streaming decoding reads every matmul weight once per frame (the LM's temporal and
depth transformers and heads, the codec's encoder and decoder, the face path) plus the KV
caches the attention reads (full after ``context`` frames). Embedding tables are not counted
(a frame reads a few rows). Dividing by 80 ms gives the bandwidth the model needs to keep up;
a module sustains roughly 70-80 % of its peak in practice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn

__all__ = ["JETSON_BANDWIDTH_GBS", "WEIGHT_BYTES", "FrameTraffic", "frame_traffic", "traffic_table"]

FRAME_S = 0.08
# peak DRAM bandwidth (GB/s) from NVIDIA's Jetson module data sheets
JETSON_BANDWIDTH_GBS: Dict[str, float] = {
    "AGX Thor": 273.0,
    "AGX Orin 64GB": 204.8,
    "Orin NX 16GB": 102.4,
    "Orin Nano 8GB (Super)": 102.0,
    "Orin Nano 8GB": 68.0,
}
# weight storage per parameter; int4/int8 carry per-group or per-channel scales (~3 % / 0.1 %)
WEIGHT_BYTES = {"fp32": 4.0, "fp16/bf16": 2.0, "int8": 1.0 + 0.001, "int4": 0.5 + 0.03}
KV_BYTES = {"fp32": 4.0, "fp16/bf16": 2.0, "int8": 2.0, "int4": 2.0}  # KV kept in 16 bit below fp32


def _matmul_params(module: nn.Module) -> int:
    """Parameters a frame reads in full: everything but embedding tables."""
    emb = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in emb)


@dataclass
class FrameTraffic:
    config: str
    lm_params: int
    codec_params: int
    face_params: int
    kv_elements: int  # temporal + codec KV read per frame once the context is full

    def bytes_per_frame(self, precision: str) -> float:
        w = (self.lm_params + self.codec_params + self.face_params) * WEIGHT_BYTES[precision]
        return w + self.kv_elements * KV_BYTES[precision]

    def gbs(self, precision: str) -> float:
        return self.bytes_per_frame(precision) / FRAME_S / 1e9


def frame_traffic(config: str) -> FrameTraffic:
    """Counts for a named LM config with Kyutai's Mimi (tiny: the tiny codec) and the default
    face model; built on the meta device, so 7B costs nothing."""
    from facebot.model.codec import MimiCodec, codec_config
    from facebot.model.configs import load_config
    from facebot.model.face_codec import FaceCodec, FaceCodecConfig
    from facebot.model.face_transformer import FaceLM, FaceTransformerConfig
    from facebot.model.lm import LMModel

    cfg = load_config(config)
    with torch.device("meta"):
        lm = LMModel(cfg)
        codec = MimiCodec(codec_config("mimi" if cfg.card == 2048 else "tiny"))
        face = nn.ModuleList([FaceLM(FaceTransformerConfig(dim_in=cfg.dim)), FaceCodec(FaceCodecConfig())])
    tc = lm.transformer.cfg
    kv = 2 * tc.num_layers * lm.transformer.capacity * tc.d_model
    for t in (codec.encoder_transformer, codec.decoder_transformer):
        kv += 2 * t.cfg.num_layers * t.capacity * t.cfg.d_model
    return FrameTraffic(config, _matmul_params(lm), _matmul_params(codec), _matmul_params(face), kv)


def traffic_table(configs: List[str] = ("small", "moshi-7b"),
                  precisions: List[str] = ("fp32", "fp16/bf16", "int8", "int4")) -> str:
    """The README's markdown table: GB read per frame, GB/s needed, and the share of each
    Jetson module's peak bandwidth (over 100 % = cannot keep up)."""
    mods = list(JETSON_BANDWIDTH_GBS)
    head = "| config | weights | GB / frame | GB/s needed | " + " | ".join(
        f"{m} ({JETSON_BANDWIDTH_GBS[m]:g} GB/s)" for m in mods) + " |"
    lines = [head, "|" + "---|" * (4 + len(mods))]
    for c in configs:
        t = frame_traffic(c)
        for p in precisions:
            need = t.gbs(p)
            share = " | ".join(f"{100 * need / JETSON_BANDWIDTH_GBS[m]:.0f} %" for m in mods)
            lines.append(f"| {c} | {p} | {t.bytes_per_frame(p) / 1e9:.3f} | {need:.1f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(traffic_table())
