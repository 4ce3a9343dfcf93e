"""Shape and options of a streaming transformer (temporal, depth, codec and face transformers alike)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import List, Optional, Union


@dataclass
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: Union[int, List[int]] = 2048
    causal: bool = True
    context: Optional[int] = None  # attention window in positions (keys with q - k < context)
    max_period: float = 10000.0
    norm: str = "layer_norm"  # layer_norm | layer_norm_f32 | rms_norm | rms_norm_f32
    gating: str = "none"  # none | silu | gelu | relu | ... (activation-gated FF)
    layer_scale: Optional[float] = None
    positional_embedding: str = "rope"  # rope | none | sin | sin_rope
    positional_scale: float = 1.0
    bias_ff: bool = False
    bias_attn: bool = False
    weights_per_step: int = 0
    weights_per_step_schedule: Optional[List[int]] = None
    activation: str = "gelu"  # FF activation when gating == 'none'
    kv_capacity: Optional[int] = None  # default: context, else weights_per_step

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} not divisible by num_heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2 and "rope" in self.positional_embedding:
            raise ValueError("RoPE needs an even head dimension")
        if self.positional_embedding not in ("rope", "none", "sin", "sin_rope"):
            raise ValueError(f"unknown positional_embedding {self.positional_embedding!r}")
        if self.norm not in ("layer_norm", "layer_norm_f32", "rms_norm", "rms_norm_f32"):
            raise ValueError(f"unknown norm {self.norm!r}")
        if self.weights_per_step_schedule is not None:
            if len(self.weights_per_step_schedule) != self.weights_per_step:
                raise ValueError("weights_per_step_schedule must have weights_per_step entries")
        if isinstance(self.dim_feedforward, list) and len(self.dim_feedforward) != self.num_weights:
            raise ValueError("a list dim_feedforward needs one entry per weight set")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def num_weights(self) -> int:
        """Number of weight sets per layer (1, or weights_per_step / schedule size)."""
        if not self.weights_per_step:
            return 1
        if self.weights_per_step_schedule is not None:
            return max(self.weights_per_step_schedule) + 1
        return self.weights_per_step

    @property
    def capacity(self) -> int:
        if self.kv_capacity is not None:
            return int(self.kv_capacity)
        if self.context is not None:
            return int(self.context)
        if self.weights_per_step:
            return int(self.weights_per_step)
        raise ValueError("a streaming transformer needs a context or kv_capacity")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**d)
