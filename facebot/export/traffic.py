"""Bytes read per 80 ms frame, per config and weight precision, against Jetson memory bandwidth.

Batch-1 streaming decoding reads every matmul weight once per frame (the LM's temporal and
depth transformers and heads, the codec's encoder and decoder, the face path) plus the KV
caches the attention reads (full after ``context`` frames). Embedding tables are not counted
(a frame reads a few rows). Dividing by 80 ms gives the bandwidth the model needs to keep up;
a module sustains roughly 70-80 % of its peak in practice.

The formula rows use nominal bytes per weight; ``--measured DIR`` adds rows whose weight bytes
come from an export's graph files (MatMulNBits blocks and scales, the float parts left as they
are), and each config ends with the KV cache alone at the context it is configured for.

    python -m facebot.export.traffic --measured graphs/small-int4
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["JETSON_BANDWIDTH_GBS", "WEIGHT_BYTES", "FrameTraffic", "frame_traffic", "traffic_table",
           "measured_weight_bytes"]

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
    context: int = 0  # the temporal transformer's context (frames) the KV count is for
    table_params: int = 0  # embedding tables (a frame reads a few rows of them)

    @property
    def matmul_params(self) -> int:
        return self.lm_params + self.codec_params + self.face_params

    def weight_bytes(self, precision: str) -> float:
        return self.matmul_params * WEIGHT_BYTES[precision]

    def kv_bytes(self, precision: str) -> float:
        return self.kv_elements * KV_BYTES[precision]

    def bytes_per_frame(self, precision: str) -> float:
        return self.weight_bytes(precision) + self.kv_bytes(precision)

    def gbs(self, precision: str) -> float:
        return self.bytes_per_frame(precision) / FRAME_S / 1e9


def frame_traffic(config: str, context: Optional[int] = None) -> FrameTraffic:
    """Counts for a named LM config with Kyutai's Mimi (tiny: the tiny codec) and the default
    face model; built on the meta device, so 7B costs nothing. ``context``: the temporal
    transformer's KV capacity in frames (default: the config's)."""
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
    ctx = int(context or lm.transformer.capacity)
    kv = 2 * tc.num_layers * ctx * tc.d_model
    for t in (codec.encoder_transformer, codec.decoder_transformer):
        kv += 2 * t.cfg.num_layers * t.capacity * t.cfg.d_model
    total = sum(p.numel() for m in (lm, codec, face) for p in m.parameters())
    matmul = [_matmul_params(lm), _matmul_params(codec), _matmul_params(face)]
    return FrameTraffic(config, *matmul, kv, ctx, total - sum(matmul))


PART_GRAPHS = {"lm": ("temporal", "depth"), "codec": ("encoder", "decoder"), "face": ("face_embed", "face_head")}


def measured_weight_bytes(folder: Path) -> Tuple[str, Dict[str, float], dict]:
    """(precision, weight bytes a frame reads per part -- lm, codec, face --, manifest) of an
    export folder, from its graph files: every initializer but the gathered-from tables
    (:func:`stored_bytes`)."""
    from .onnx_export import read_manifest, stored_bytes

    folder = Path(folder)
    m = read_manifest(folder)
    parts = {}
    for part, names in PART_GRAPHS.items():
        entries = [m["graphs"][n] for n in names if n in m["graphs"]]
        parts[part] = float(sum(e["frame_bytes"] if "frame_bytes" in e else
                                stored_bytes(folder / e["file"])["frame_bytes"] for e in entries))
    return m["precision"], parts, m


def scaled_weight_bytes(parts: Dict[str, float], src: FrameTraffic, dst: FrameTraffic) -> float:
    """Measured bytes per part of ``src``'s export carried to ``dst``: bytes per parameter of
    each part times ``dst``'s parameters (the same codec: its bytes as they are)."""
    out = 0.0
    for part, nbytes in parts.items():
        n_src, n_dst = getattr(src, f"{part}_params"), getattr(dst, f"{part}_params")
        out += nbytes if n_src == n_dst else (nbytes / n_src * n_dst if n_src else 0.0)
    return out


def _row(label: str, what: str, nbytes: float, mods: List[str]) -> str:
    need = nbytes / FRAME_S / 1e9
    share = " | ".join(f"{100 * need / JETSON_BANDWIDTH_GBS[m]:.0f} %" for m in mods)
    return f"| {label} | {what} | {nbytes / 1e9:.3f} | {need:.1f} | {share} |"


def traffic_table(configs: List[str] = ("small", "moshi-7b"),
                  precisions: List[str] = ("fp32", "fp16/bf16", "int8", "int4"),
                  measured: Sequence[Path] = (), context: Optional[int] = None) -> str:
    """The README's markdown table: GB read per frame (weights + KV once the context is full),
    GB/s needed, and the share of each Jetson module's peak bandwidth (over 100 % = cannot keep
    up). ``measured``: export folders whose graph files give measured weight bytes (their config
    must be one of ``configs``; the other configs get each part's measured bytes per parameter
    -- LM, face -- scaled to their size, Mimi's as they are). A last line per config is the KV
    cache alone at the configured context."""
    from facebot.model.configs import load_config

    mods = list(JETSON_BANDWIDTH_GBS)
    head = "| config | weights | GB / frame | GB/s needed | " + " | ".join(
        f"{m} ({JETSON_BANDWIDTH_GBS[m]:g} GB/s)" for m in mods) + " |"
    lines = [head, "|" + "---|" * (4 + len(mods))]
    meas = []
    for folder in measured:
        prec, parts, m = measured_weight_bytes(folder)
        src = next((x for x in configs if load_config(x).to_dict() == m["config"]), None)
        if src is not None:
            meas.append((Path(folder), prec, parts, m, src))
    for c in configs:
        t = frame_traffic(c, context)
        kv_prec = "fp16/bf16"
        for p in precisions:
            lines.append(_row(c, p, t.bytes_per_frame(p), mods))
        for folder, prec, parts, m, src in meas:
            if not m.get("face"):
                parts = {**parts, "face": 0.0}
            no_face = "" if m.get("face") else ", no face graphs"
            if src == c:
                what = f"{prec} measured ({folder.name} files{no_face})"
            else:
                what = f"{prec} (bytes per parameter as measured at {src}{no_face})"
            w = scaled_weight_bytes(parts, frame_traffic(src), t)
            lines.append(_row(c, what, w + t.kv_bytes(prec if prec == "fp32" else kv_prec), mods))
        lines.append(_row(c, f"of which KV cache at context {t.context} frames "
                             f"({t.context * FRAME_S:.0f} s, 16 bit)", t.kv_bytes(kv_prec), mods))
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="small,moshi-7b")
    ap.add_argument("--measured", nargs="*", default=[], metavar="DIR",
                    help="export folders (e.g. an int4 export of small) whose files give measured weight bytes")
    ap.add_argument("--context", type=int, default=None,
                    help="temporal KV context in frames (default: each config's own)")
    args = ap.parse_args(argv)
    print(traffic_table([c for c in args.configs.split(",") if c], measured=[Path(m) for m in args.measured],
                        context=args.context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
