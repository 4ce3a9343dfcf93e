"""Language-model configurations: ``tiny`` (tests), ``small`` (CPU real time), ``moshi-7b``
(Kyutai's published Moshi), and any Kyutai ``config.json``.

:class:`LMConfig` uses the keyword names of moshi's ``LMModel`` / Kyutai's ``config.json`` so a
config file loads as is (``load_config(path)``). Keys of Kyutai's file that only name other files
or generation defaults (``moshi_name``, ``mimi_name``, ``tokenizer_name``, ``lm_gen_config``,
``model_type``, ...) are kept in ``LMConfig.meta``. Features we do not implement (conditioners,
cross-attention, demuxed text, low-rank embeddings, LoRA, GQA) are refused with a clear error.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from facebot.config.schema import ConfigError
from facebot.io.atomic import atomic_write_text
from .transformer import TransformerConfig

__all__ = ["LMConfig", "load_config", "get_config", "CONFIGS", "MOSHI_7B", "MOSHI_DELAYS"]

MOSHI_DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


@dataclass
class LMConfig:
    # Defaults are moshi's LMModel / StreamingTransformer defaults, so that a config.json that
    # leaves a key out means what it means to moshi.
    delays: List[int] = field(default_factory=lambda: [0])
    n_q: int = 8
    dep_q: int = 8
    card: int = 1024
    text_card: int = 32000
    text_card_out: Optional[int] = None
    dim: int = 128
    num_heads: int = 8
    num_layers: int = 8
    hidden_scale: float = 4
    norm: str = "layer_norm"
    bias_proj: bool = False
    causal: bool = True
    context: Optional[int] = None
    max_period: float = 10000.0
    gating: str = "none"
    layer_scale: Optional[float] = None
    positional_embedding: str = "sin"
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 6
    depformer_dim: int = 256
    depformer_dim_feedforward: Union[int, List[int], None] = None
    depformer_num_heads: Optional[int] = None  # moshi: required when a depformer exists
    depformer_num_layers: Optional[int] = None  # default: num_layers
    depformer_layer_scale: Optional[float] = None
    depformer_multi_linear: bool = False
    depformer_weights_per_step: bool = False
    depformer_weights_per_step_schedule: Optional[List[int]] = None
    depformer_pos_emb: str = "sin"
    depformer_norm: Optional[str] = None
    depformer_gating: Optional[str] = None  # default: gating
    depformer_max_period: Optional[float] = None  # default: max_period
    depformer_context: Optional[int] = None  # ignored, as in moshi (the depformer restarts per frame)
    meta: Dict[str, Any] = field(default_factory=dict)  # file names, lm_gen_config, model_type...

    def __post_init__(self) -> None:
        """Shape errors are refused here, naming the key, before a network is built from them."""
        for name in ("n_q", "card", "text_card", "dim", "num_heads", "num_layers", "depformer_dim"):
            _positive_int(name, getattr(self, name))
        for name in ("context", "depformer_num_heads", "depformer_num_layers", "text_card_out"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _positive_int("dep_q", self.dep_q, allow_zero=True)
        for name in ("hidden_scale", "max_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        if not isinstance(self.delays, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in self.delays):
            raise ConfigError(f"delays must be a list of integers, got {self.delays!r}")
        if len(self.delays) != self.n_q + 1:
            raise ConfigError(f"delays has {len(self.delays)} entries, expected n_q + 1 = {self.n_q + 1}")
        if any(d < 0 for d in self.delays):
            raise ConfigError("delays must be >= 0")
        if self.dep_q > self.n_q:
            raise ConfigError("dep_q must be <= n_q")
        if self.depformer_weights_per_step_schedule is not None:
            if len(self.depformer_weights_per_step_schedule) != self.dep_q:
                raise ConfigError("depformer_weights_per_step_schedule needs dep_q entries")

    # ---- derived -----------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.n_q + 1

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def text_out_card(self) -> int:
        return self.text_card if self.text_card_out is None else self.text_card_out

    @property
    def num_depformer_in(self) -> int:
        if not self.depformer_multi_linear:
            return 1
        if self.depformer_weights_per_step_schedule:
            return max(self.depformer_weights_per_step_schedule) + 1
        return self.dep_q

    def temporal_config(self) -> TransformerConfig:
        return TransformerConfig(
            d_model=self.dim, num_heads=self.num_heads, num_layers=self.num_layers,
            dim_feedforward=int(self.hidden_scale * self.dim), causal=self.causal,
            context=self.context, max_period=float(self.max_period), norm=self.norm,
            gating=self.gating, layer_scale=self.layer_scale,
            positional_embedding=self.positional_embedding)

    def depformer_config(self) -> TransformerConfig:
        dff = self.depformer_dim_feedforward
        if dff is None:
            dff = int(self.hidden_scale * self.depformer_dim)
        heads = self.depformer_num_heads if self.depformer_num_heads is not None else self.num_heads
        return TransformerConfig(
            d_model=self.depformer_dim, num_heads=heads,
            num_layers=self.depformer_num_layers or self.num_layers,
            dim_feedforward=dff, causal=self.causal, context=None,
            max_period=float(self.depformer_max_period or self.max_period), norm=self.norm,
            gating=self.depformer_gating or self.gating,
            layer_scale=self.depformer_layer_scale,
            positional_embedding=self.depformer_pos_emb,
            weights_per_step=self.dep_q if self.depformer_weights_per_step else 0,
            weights_per_step_schedule=(self.depformer_weights_per_step_schedule
                                       if self.depformer_weights_per_step else None),
            kv_capacity=self.dep_q)

    def replace(self, **kw) -> "LMConfig":
        d = self.to_dict()
        d.update(kw)
        return LMConfig(**d)

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def to_json(self, path: Union[str, Path]) -> None:
        """Write in Kyutai's config.json layout (meta keys flattened back in)."""
        d = self.to_dict()
        meta = d.pop("meta")
        d.update(meta)
        atomic_write_text(path, json.dumps(d, indent=2))

    def moshi_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for moshi's ``LMModel`` giving the same network."""
        d = self.to_dict()
        d.pop("meta")
        for k in ("depformer_gating", "depformer_max_period", "depformer_num_layers"):
            if d[k] is None:
                d.pop(k)
        if d["depformer_num_heads"] is None:
            d["depformer_num_heads"] = self.num_heads
        d.pop("depformer_context")
        return d


_MODEL_KEYS = {f.name for f in fields(LMConfig)} - {"meta"}
# Kyutai config.json keys that are not network shape: kept in meta.
_META_KEYS = {"moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name",
              "model_type", "lm_gen_config", "tts_config", "stt_config", "model_id",
              "quantization_bits", "quantization_group_size"}
# accepted when they hold the value that means "feature off"
_OFF_VALUES = {"cross_attention": False, "demux_second_stream": False,
               "demux_second_text_stream": False, "conditioners": {}, "fuser": None,
               "kv_repeat": 1, "depformer_kv_repeat": 1, "depformer_low_rank_embeddings": None,
               "norm_emb": False, "lora": False, "quantize": False, "depformer_causal": True,
               "depformer_cross_attention": False, "gradient_checkpointing": False}


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if allow_zero else 1}, got {value!r}")


def config_from_dict(raw: Dict[str, Any], source: str = "(dict)") -> LMConfig:
    d = dict(raw)
    meta = {k: d.pop(k) for k in list(d) if k in _META_KEYS}
    unsupported = []
    for k, off in _OFF_VALUES.items():
        if k in d:
            v = d.pop(k)
            is_off = v == off or (off in (None, False) or off == {}) and not v
            if not is_off:
                unsupported.append(f"{k}={v!r}")
    if unsupported:
        raise ConfigError(f"{source}: unsupported features: {', '.join(unsupported)}")
    unknown = sorted(set(d) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown LM config keys: {unknown}")
    try:
        return LMConfig(**d, meta=meta)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _tiny() -> LMConfig:
    return LMConfig(
        delays=list(MOSHI_DELAYS), n_q=16, dep_q=8, card=40, text_card=48,
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, norm="rms_norm_f32",
        causal=True, context=64, max_period=10000.0, gating="silu", layer_scale=None,
        positional_embedding="rope", depformer_dim=32, depformer_dim_feedforward=int(4.125 * 32),
        depformer_num_heads=2, depformer_num_layers=2, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_pos_emb="none", depformer_gating="silu",
        depformer_max_period=10000.0, depformer_context=8)


def _small() -> LMConfig:
    # dim 512 / 6 layers / depformer 2 layers at 256; real Mimi and text vocabularies.
    # context 750 frames = 60 s of conversation at 12.5 Hz.
    return LMConfig(
        delays=list(MOSHI_DELAYS), n_q=16, dep_q=8, card=2048, text_card=32000,
        dim=512, num_heads=8, num_layers=6, hidden_scale=4.125, norm="rms_norm_f32",
        causal=True, context=750, max_period=10000.0, gating="silu", layer_scale=None,
        positional_embedding="rope", depformer_dim=256, depformer_dim_feedforward=int(4.125 * 256),
        depformer_num_heads=8, depformer_num_layers=2, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_pos_emb="none", depformer_gating="silu",
        depformer_max_period=10000.0, depformer_context=8)


# moshi.models.loaders._lm_kwargs (Kyutai's Moshi 7B), verbatim keys
MOSHI_7B: Dict[str, Any] = {
    "dim": 4096, "text_card": 32000, "existing_text_padding_id": 3, "n_q": 16, "dep_q": 8,
    "card": 2048, "num_heads": 32, "num_layers": 32, "hidden_scale": 4.125, "causal": True,
    "layer_scale": None, "context": 3000, "max_period": 10000, "gating": "silu",
    "norm": "rms_norm_f32", "positional_embedding": "rope", "depformer_dim": 1024,
    "depformer_dim_feedforward": int(4.125 * 1024), "depformer_num_heads": 16,
    "depformer_num_layers": 6, "depformer_layer_scale": None, "depformer_multi_linear": True,
    "depformer_context": 8, "depformer_max_period": 10000, "depformer_gating": "silu",
    "depformer_pos_emb": "none", "depformer_weights_per_step": True,
    "delays": list(MOSHI_DELAYS),
}

CONFIGS = {
    "tiny": _tiny,
    "small": _small,
    "moshi-7b": lambda: config_from_dict(MOSHI_7B, "moshi-7b"),
}


def get_config(name: str) -> LMConfig:
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ValueError(f"unknown LM config {name!r}; known: {sorted(CONFIGS)}") from None


def load_config(name_or_path: Union[str, Path]) -> LMConfig:
    """A named config (tiny, small, moshi-7b) or a Kyutai-style config.json file."""
    if isinstance(name_or_path, str) and name_or_path in CONFIGS:
        return get_config(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"{name_or_path!s}: neither a known config ({sorted(CONFIGS)}) nor a file")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise ConfigError(f"{path}: not readable ({err.strerror})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return config_from_dict(raw, str(path))
