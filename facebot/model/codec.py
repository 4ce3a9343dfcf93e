"""Mimi, Kyutai's streaming speech codec: 24 kHz audio <-> 12.5 Hz frames of ``num_codebooks``
codes (split residual VQ, 2048-entry codebooks; Moshi uses 8 of the 32).

Pipeline (one 80 ms frame = 1920 samples)::

    encode: pcm [B,1,1920] -> SEANet encoder (hop 960: 2 steps at 25 Hz) -> transformer (8 layers)
            -> stride-2 conv (12.5 Hz) -> split RVQ -> codes [B, K, 1]
    decode: codes [B, K, 1] -> RVQ embeddings -> depthwise stride-2 transposed conv (25 Hz)
            -> transformer -> SEANet decoder -> pcm [B, 1, 1920]

The streaming steps are pure functions of ``(input, state)`` with a flat ``dict[str, Tensor]``
of static shapes: convolution histories and transposed-convolution tails (see
:mod:`facebot.model.conv`), the transformers' KV ring buffers and position counters (see
:mod:`facebot.model.transformer`: the KV buffers are written in place, one slot per position, and
returned). Encoder and decoder states are separate (``init_encoder_state`` /
``init_decoder_state``) so that each step can be exported on its own; ``init_state`` gives both in
one dict, and each step passes through the other's entries untouched.

Kyutai checkpoints (``tokenizer-e351c8d8-checkpoint125.safetensors``) load with
:meth:`MimiCodec.from_kyutai`: every tensor of the file is matched to ours by an explicit key map
(layouts converted), and a wrong or partial file raises one
:class:`~facebot.model.checkpoint.CheckpointError` listing the missing, unexpected and
mismatched keys. Only safetensors is read (no pickle).

Attention window: like moshi, the KV ring holds ``context`` positions; when the two 25 Hz steps
of a frame are written after the ring has wrapped (after 10 s for Mimi), the first of them sees
one key fewer than in a non-streaming pass. That is moshi's streaming behaviour, which we keep
for parity; ``kv_capacity = context + 1`` makes streaming equal non-streaming at any length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import check_state, merge_per_step_keys, read_safetensors
from .conv import KyutaiEntry, State, StreamConv1d, StreamConvTranspose1d
from .quantizer import QuantizerConfig, SplitResidualVQ
from .seanet import SeanetConfig, SeanetDecoder, SeanetEncoder
from .transformer import StreamingTransformer
from .transformer_config import TransformerConfig

__all__ = ["MimiConfig", "MimiCodec", "CODEC_PRESETS", "codec_config", "State"]

# old EuclideanCodebook buffer names that moshi still accepts
_LEGACY_CODEBOOK = {"inited": "_initialized", "cluster_size": "cluster_usage",
                    "embed_avg": "embedding_sum", "embed_sum": "embedding_sum"}


@dataclass(frozen=True)
class MimiConfig:
    sample_rate: int = 24000
    frame_rate: float = 12.5
    seanet: SeanetConfig = field(default_factory=SeanetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    # encoder and decoder transformers (d_model = seanet.dimension, as in Kyutai's Mimi)
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250
    layer_scale: Optional[float] = 0.01
    max_period: float = 10000.0
    kv_capacity: Optional[int] = None  # None: context (moshi); context + 1: exact window

    def __post_init__(self) -> None:
        if self.quantizer.input_dimension != self.seanet.dimension or \
                self.quantizer.output_dimension != self.seanet.dimension:
            raise ValueError("quantizer input/output dimension must equal seanet.dimension")
        enc_rate = self.sample_rate / self.seanet.hop_length
        stride = enc_rate / self.frame_rate
        if stride != int(stride) or stride < 1:
            raise ValueError(f"encoder rate {enc_rate} Hz is not an integer multiple of the "
                             f"frame rate {self.frame_rate} Hz")
        if self.sample_rate / self.frame_rate != int(self.sample_rate / self.frame_rate):
            raise ValueError("frame size (sample_rate / frame_rate) must be an integer")

    # ---- presets -----------------------------------------------------------------------------
    @classmethod
    def mimi(cls, num_codebooks: int = 8) -> "MimiConfig":
        """Kyutai's Mimi (moshi ``loaders._mimi_config``): 79 M parameters."""
        return cls(quantizer=QuantizerConfig(num_codebooks=num_codebooks))

    @classmethod
    def tiny(cls, num_codebooks: int = 8, context: int = 250,
             kv_capacity: Optional[int] = None) -> "MimiConfig":
        """Same structure and frame rates as Mimi, a few thousand times less compute (tests)."""
        return cls(
            seanet=SeanetConfig(dimension=32, n_filters=4),
            quantizer=QuantizerConfig(dimension=16, input_dimension=32, output_dimension=32,
                                      bins=64, n_q=8, num_codebooks=num_codebooks),
            num_heads=4, num_layers=2, dim_feedforward=64, context=context,
            kv_capacity=kv_capacity)

    def replace(self, **kw) -> "MimiConfig":
        return dataclasses.replace(self, **kw)

    # ---- derived -------------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.seanet.dimension

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.seanet.hop_length

    @property
    def resample_stride(self) -> int:
        return int(self.encoder_frame_rate / self.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.quantizer.bins

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            d_model=self.dimension, num_heads=self.num_heads, num_layers=self.num_layers,
            dim_feedforward=self.dim_feedforward, causal=True, context=self.context,
            max_period=float(self.max_period), norm="layer_norm", gating="none",
            layer_scale=self.layer_scale, positional_embedding="rope", activation="gelu",
            kv_capacity=self.kv_capacity)

    def moshi_config(self) -> dict:
        """``mimi_config`` for moshi's ``loaders.get_mimi`` building the same network."""
        d = self.dimension
        return {
            "sample_rate": self.sample_rate, "channels": self.seanet.channels,
            "frame_rate": self.frame_rate, "seanet": self.seanet.moshi_kwargs(),
            "quantizer": self.quantizer.moshi_kwargs(),
            "transformer": {
                "d_model": d, "num_heads": self.num_heads, "num_layers": self.num_layers,
                "causal": True, "layer_scale": self.layer_scale, "context": self.context,
                "conv_layout": True, "max_period": self.max_period, "gating": "none",
                "norm": "layer_norm", "positional_embedding": "rope",
                "dim_feedforward": self.dim_feedforward, "input_dimension": d,
                "output_dimensions": [d]},
        }


CODEC_PRESETS = {"tiny": MimiConfig.tiny, "mimi": MimiConfig.mimi,
                 # the LM configurations' codec: Kyutai's Mimi for all but the test model
                 "small": MimiConfig.mimi, "moshi-7b": MimiConfig.mimi}


def codec_config(name: str, **kw) -> MimiConfig:
    try:
        return CODEC_PRESETS[name](**kw)
    except KeyError:
        raise ValueError(f"unknown codec config {name!r} (known: {sorted(CODEC_PRESETS)})") from None


class MimiCodec(nn.Module):
    """Mimi with pure streaming steps (inference only: parameters do not require grad)."""

    def __init__(self, cfg: Optional[MimiConfig] = None):
        super().__init__()
        cfg = MimiConfig.mimi() if cfg is None else cfg
        self.cfg = cfg
        d, s = cfg.dimension, cfg.resample_stride
        tcfg = cfg.transformer_config()
        self.encoder = SeanetEncoder(cfg.seanet)
        self.encoder_transformer = StreamingTransformer(tcfg)
        self.downsample = StreamConv1d(d, d, 2 * s, stride=s, bias=False, pad_mode="replicate")
        self.quantizer = SplitResidualVQ(cfg.quantizer)
        self.upsample = StreamConvTranspose1d(d, d, 2 * s, s, groups=d, bias=False)
        self.decoder_transformer = StreamingTransformer(tcfg)
        self.decoder = SeanetDecoder(cfg.seanet)
        for name, m in self.named_modules():
            if isinstance(m, (StreamConv1d, StreamConvTranspose1d)):
                m.key = name + "."
        self.requires_grad_(False)
        self.eval()
        self._tr_keys: Dict[str, List[Tuple[str, str]]] = {}

    # ---- properties ----------------------------------------------------------------------------
    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.cfg.num_codebooks

    @property
    def device(self) -> torch.device:
        return self.downsample.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.downsample.weight.dtype

    # ---- state ---------------------------------------------------------------------------------
    def init_encoder_state(self, batch_size: int = 1, device=None, dtype=None) -> State:
        st: State = {}
        st.update(self.encoder.init_state(batch_size, device, dtype))
        for k, v in self.encoder_transformer.init_state(batch_size, device, dtype).items():
            st["encoder_transformer." + k] = v
        st.update(self.downsample.init_state(batch_size, device, dtype))
        return st

    def init_decoder_state(self, batch_size: int = 1, device=None, dtype=None) -> State:
        st: State = {}
        st.update(self.upsample.init_state(batch_size, device, dtype))
        for k, v in self.decoder_transformer.init_state(batch_size, device, dtype).items():
            st["decoder_transformer." + k] = v
        st.update(self.decoder.init_state(batch_size, device, dtype))
        return st

    def init_state(self, batch_size: int = 1, device=None, dtype=None) -> State:
        """Encoder and decoder state in one flat dict."""
        return {**self.init_encoder_state(batch_size, device, dtype),
                **self.init_decoder_state(batch_size, device, dtype)}

    def _transformer_step(self, name: str, x: torch.Tensor, state: State,
                          out: State, slots: bool) -> torch.Tensor:
        keys = self._tr_keys.get(name)
        if keys is None:
            p = name + "."
            keys = [(p + k, k) for k in getattr(self, name).init_state(1, device="meta")]
            self._tr_keys[name] = keys
        sub = {k: state[full] for full, k in keys}
        tf = getattr(self, name)
        y, sub = tf.step_slots(x, sub) if slots else tf.step(x, sub)
        for full, k in keys:
            out[full] = sub[k]
        return y

    # ---- streaming -----------------------------------------------------------------------------
    def encode_step(self, pcm: torch.Tensor, state: State, slots: bool = False) -> Tuple[torch.Tensor, State]:
        """pcm ``[B, 1, n * frame_size]`` -> (codes ``[B, num_codebooks, n]`` int64, new state).
        ``slots``: the transformer's KV buffers are left alone and the new state holds their new
        slots (``StreamingTransformer.step_slots``, the form exported graphs take)."""
        B, C, T = pcm.shape
        if C != self.cfg.seanet.channels or T == 0 or T % self.frame_size:
            raise ValueError(f"encode_step: expected [B, {self.cfg.seanet.channels}, "
                             f"n*{self.frame_size}] audio, got {list(pcm.shape)}")
        out: State = {}
        x = self.encoder.step(pcm.transpose(1, 2), state, out)
        x = self._transformer_step("encoder_transformer", x, state, out, slots)
        x = self.downsample.step(x, state, out)
        codes = self.quantizer.encode(x)
        new = dict(state)
        new.update(out)
        return codes, new

    def decode_step(self, codes: torch.Tensor, state: State, slots: bool = False) -> Tuple[torch.Tensor, State]:
        """codes ``[B, K, n]`` -> (pcm ``[B, 1, n * frame_size]``, new state); ``slots`` as in
        ``encode_step``."""
        if codes.dim() != 3:
            raise ValueError(f"decode_step: expected codes [B, K, n], got {list(codes.shape)}")
        out: State = {}
        x = self.quantizer.decode(codes)
        x = self.upsample.step(x, state, out)
        x = self._transformer_step("decoder_transformer", x, state, out, slots)
        y = self.decoder.step(x, state, out)
        new = dict(state)
        new.update(out)
        return y.transpose(1, 2), new

    # ---- whole clips ---------------------------------------------------------------------------
    def encode(self, pcm: torch.Tensor) -> torch.Tensor:
        """pcm ``[B, 1, T]`` (zero-padded to whole frames, as moshi) -> codes ``[B, K, ceil(T / frame)]``."""
        B, C, T = pcm.shape
        if C != self.cfg.seanet.channels or T == 0:
            raise ValueError(f"encode: expected [B, {self.cfg.seanet.channels}, T>0] audio, "
                             f"got {list(pcm.shape)}")
        pad = (-T) % self.frame_size
        if pad:
            pcm = F.pad(pcm, (0, pad))
        x = self.encoder.step(pcm.transpose(1, 2), self.encoder.init_state(B), {})
        x = self.encoder_transformer(x)
        x = self.downsample.step(x, self.downsample.init_state(B), {})
        return self.quantizer.encode(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K, n]`` -> pcm ``[B, 1, n * frame_size]``."""
        B = codes.shape[0]
        x = self.quantizer.decode(codes)
        x = self.upsample.step(x, self.upsample.init_state(B), {})
        x = self.decoder_transformer(x)
        y = self.decoder.step(x, self.decoder.init_state(B), {})
        return y.transpose(1, 2)

    # ---- Kyutai checkpoints --------------------------------------------------------------------
    def kyutai_entries(self) -> List[KyutaiEntry]:
        """Every tensor of a Kyutai Mimi checkpoint for this config: key, shape, our target."""
        entries: List[KyutaiEntry] = []
        entries += self.encoder.kyutai_entries("encoder.", "encoder.")
        entries += self.decoder.kyutai_entries("decoder.", "decoder.")
        for name in ("encoder_transformer", "decoder_transformer"):
            for k, v in getattr(self, name).state_dict().items():
                entries.append(KyutaiEntry(f"{name}.transformer.{k}", tuple(v.shape),
                                           f"{name}.{k}"))
        entries += self.quantizer.kyutai_entries("quantizer.", "quantizer.")
        entries += self.downsample.kyutai_entries("downsample.conv.conv.conv.", "downsample.")
        entries += self.upsample.kyutai_entries("upsample.convtr.convtr.convtr.", "upsample.")
        return entries

    @torch.no_grad()
    def load_kyutai_state(self, sd: Dict[str, torch.Tensor], source: str = "(state dict)"
                          ) -> "MimiCodec":
        """Load a Kyutai/moshi Mimi state dict (file layout or moshi's ``state_dict()``)."""
        sd = merge_per_step_keys(sd)  # moshi in memory: in_projs.0.weight -> in_proj_weight
        fixed: Dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            head, _, leaf = k.rpartition(".")
            if head.endswith("._codebook") and leaf in _LEGACY_CODEBOOK:
                k = f"{head}.{_LEGACY_CODEBOOK[leaf]}"
            fixed[k] = v
        sd = fixed
        entries = self.kyutai_entries()
        expected = {e.key: torch.empty(e.shape, device="meta") for e in entries}
        check_state(expected, sd, source)
        targets = dict(self.named_parameters())
        targets.update(self.named_buffers())
        for e in entries:
            if e.target is None:
                continue
            v = sd[e.key]
            if e.convert is not None:
                v = e.convert(v)
            t = targets[e.target]
            t.copy_(v.to(t.dtype))
        self.quantizer.load_kyutai_codebooks(sd, "quantizer.")
        return self

    @classmethod
    def from_kyutai(cls, path: Union[str, Path], cfg: Optional[MimiConfig] = None,
                    device: Union[str, torch.device] = "cpu",
                    dtype: torch.dtype = torch.float32) -> "MimiCodec":
        """Load Kyutai's ``tokenizer-*.safetensors`` (or a moshi Mimi ``state_dict`` saved as
        safetensors). ``cfg`` defaults to Kyutai's Mimi with 8 codebooks."""
        sd = read_safetensors(path)
        codec = cls(cfg)
        codec.load_kyutai_state(sd, source=str(path))
        return codec.to(device=device, dtype=dtype)

    @torch.no_grad()
    def kyutai_state_dict(self) -> Dict[str, torch.Tensor]:
        """Our weights in Kyutai's file layout (codebooks as ``embedding_sum`` with unit usage;
        codebooks beyond ``num_codebooks`` are not ours to give and are left out)."""
        targets = dict(self.named_parameters())
        out: Dict[str, torch.Tensor] = {}
        for e in self.kyutai_entries():
            if e.target is None:
                continue
            t = targets[e.target].detach()
            out[e.key] = (e.export(t) if e.export is not None else t).contiguous().clone()
        for k, cb in enumerate(self.quantizer.kyutai_codebook_keys("quantizer.")):
            emb = self.quantizer.codebooks[k]
            out[cb + "embedding_sum"] = emb.clone()
            out[cb + "cluster_usage"] = torch.ones(emb.shape[0], dtype=emb.dtype)
            out[cb + "_initialized"] = torch.ones(1, dtype=emb.dtype)
        return out


def _check_entries_cover(codec: MimiCodec) -> None:  # used by tests
    covered = {e.target for e in codec.kyutai_entries() if e.target is not None}
    params = {n for n, _ in codec.named_parameters()}
    if covered != params:
        raise AssertionError(f"key map does not cover: {sorted(params - covered)}; "
                             f"unknown targets: {sorted(covered - params)}")
