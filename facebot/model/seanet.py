"""SEANet encoder and decoder (Mimi's convolutional halves), causal and streaming.

Same network as moshi's ``SEANetEncoder`` / ``SEANetDecoder`` in the configuration Mimi uses
(causal, ELU, no weight norm at inference, constant padding, true skip connections), written on
:mod:`facebot.model.conv` with channel-last activations ``[B, T, C]`` and explicit state.

Layer ``i`` of ``layers`` corresponds to moshi's ``model.{kyutai_index[i]}`` (moshi counts the
ELU modules too), which is all the checkpoint key map needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn as nn

from .conv import KyutaiEntry, State, StreamConv1d, StreamConvTranspose1d

__all__ = ["SeanetConfig", "SeanetEncoder", "SeanetDecoder", "ResBlock"]


@dataclass(frozen=True)
class SeanetConfig:
    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: Tuple[int, ...] = (8, 6, 5, 4)  # decoder order, as in moshi (the encoder reverses it)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2

    @property
    def hop_length(self) -> int:
        n = 1
        for r in self.ratios:
            n *= r
        return n

    def moshi_kwargs(self) -> dict:
        """Keyword arguments of moshi's SEANetEncoder/SEANetDecoder for the same network."""
        return dict(channels=self.channels, dimension=self.dimension, n_filters=self.n_filters,
                    n_residual_layers=self.n_residual_layers, ratios=list(self.ratios),
                    activation="ELU", compress=self.compress, dilation_base=self.dilation_base,
                    disable_norm_outer_blocks=0, kernel_size=self.kernel_size,
                    residual_kernel_size=self.residual_kernel_size,
                    last_kernel_size=self.last_kernel_size, norm="none", pad_mode="constant",
                    true_skip=True, causal=True)


class ResBlock(nn.Module):
    """x + conv_k1(elu(conv_k(elu(x)))) (moshi's SEANetResnetBlock with a true skip)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.conv1 = StreamConv1d(dim, hidden, kernel_size, dilation=dilation, pre_elu=True)
        self.conv2 = StreamConv1d(hidden, dim, 1, pre_elu=True)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {**self.conv1.init_state(batch_size, device, dtype),
                **self.conv2.init_state(batch_size, device, dtype)}

    def step(self, x: torch.Tensor, state: State, out: State) -> torch.Tensor:
        return x + self.conv2.step(self.conv1.step(x, state, out), state, out)

    def kyutai_entries(self, key_prefix: str, name_prefix: str) -> List[KyutaiEntry]:
        return (self.conv1.kyutai_entries(key_prefix + "block.1.conv.conv.", name_prefix + "conv1.")
                + self.conv2.kyutai_entries(key_prefix + "block.3.conv.conv.", name_prefix + "conv2."))


class _Seanet(nn.Module):
    layers: nn.ModuleList
    kyutai_index: List[int]

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        out: State = {}
        for layer in self.layers:
            out.update(layer.init_state(batch_size, device, dtype))
        return out

    def step(self, x: torch.Tensor, state: State, out: State) -> torch.Tensor:
        for layer in self.layers:
            x = layer.step(x, state, out)
        return x

    def kyutai_entries(self, key_prefix: str, name_prefix: str) -> List[KyutaiEntry]:
        entries: List[KyutaiEntry] = []
        for i, (layer, k) in enumerate(zip(self.layers, self.kyutai_index)):
            kp = f"{key_prefix}model.{k}."
            np_ = f"{name_prefix}layers.{i}."
            if isinstance(layer, ResBlock):
                entries += layer.kyutai_entries(kp, np_)
            elif isinstance(layer, StreamConv1d):
                entries += layer.kyutai_entries(kp + "conv.conv.", np_)
            else:
                entries += layer.kyutai_entries(kp + "convtr.convtr.", np_)
        return entries


class SeanetEncoder(_Seanet):
    """Audio ``[B, T, channels]`` -> latent ``[B, T / hop, dimension]``."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        layers: List[nn.Module] = [StreamConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size)]
        index = [0]
        k = 1
        mult = 1
        for ratio in reversed(cfg.ratios):
            dim = mult * cfg.n_filters
            for j in range(cfg.n_residual_layers):
                layers.append(ResBlock(dim, cfg.residual_kernel_size, cfg.dilation_base ** j,
                                       cfg.compress))
                index.append(k)
                k += 1
            layers.append(StreamConv1d(dim, 2 * dim, 2 * ratio, stride=ratio, pre_elu=True))
            index.append(k + 1)  # moshi: ELU at k, conv at k + 1
            k += 2
            mult *= 2
        layers.append(StreamConv1d(mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size,
                                   pre_elu=True))
        index.append(k + 1)
        self.layers = nn.ModuleList(layers)
        self.kyutai_index = index


class SeanetDecoder(_Seanet):
    """Latent ``[B, T, dimension]`` -> audio ``[B, T * hop, channels]``."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        mult = 2 ** len(cfg.ratios)
        layers: List[nn.Module] = [StreamConv1d(cfg.dimension, mult * cfg.n_filters,
                                                cfg.kernel_size)]
        index = [0]
        k = 1
        for ratio in cfg.ratios:
            dim = mult * cfg.n_filters
            layers.append(StreamConvTranspose1d(dim, dim // 2, 2 * ratio, ratio, pre_elu=True))
            index.append(k + 1)
            k += 2
            for j in range(cfg.n_residual_layers):
                layers.append(ResBlock(dim // 2, cfg.residual_kernel_size, cfg.dilation_base ** j,
                                       cfg.compress))
                index.append(k)
                k += 1
            mult //= 2
        layers.append(StreamConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size,
                                   pre_elu=True))
        index.append(k + 1)
        self.layers = nn.ModuleList(layers)
        self.kyutai_index = index
