"""Causal 1-D convolutions for streaming, channel-last, with the history as explicit state.

Layout: activations are ``[B, T, C]`` (time-major, channels last) everywhere in the codec, the
layout of the transformers between the convolutions, so nothing is transposed on the way.

A convolution is computed as one matrix product: the input windows (``unfold``: a strided view,
copied once into ``[B*T_out, K*C_in]``) times the weight stored as ``[C_out, K*C_in]``. On CPU
this is several times faster than ``F.conv1d`` for the codec's late layers (few output steps,
large kernels: moshi's first decoder transposed convolution alone costs ~25 ms per frame through
``slow_conv_transpose2d``), and it exports as MatMul.

Streaming state (a tensor per layer, static shape, passed in and returned):

* :class:`StreamConv1d`: the last ``(K - 1) * dilation + 1 - stride`` input steps ``[B, H, C_in]``
  (zeros at start: causal zero padding), plus, with ``pad_mode='replicate'``, a ``first`` flag
  ``[B]`` (bool) saying that the history should be the first input sample repeated (moshi's
  replicate padding of the resampling convolution).
* :class:`StreamConvTranspose1d`: the overlapping tail of the last output block, without bias,
  ``[B, K - stride, C_out]``.

Feeding a whole clip from a fresh state gives exactly the outputs of feeding it in pieces (each a
multiple of the stride): this is how the non-streaming path is computed.

Weights are kept in our layout; :meth:`kyutai_entries` gives, for each parameter, the key, shape
and conversion of Kyutai's checkpoint layout (``nn.Conv1d``: ``[C_out, C_in, K]``;
``nn.ConvTranspose1d``: ``[C_in, C_out / groups, K]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

State = Dict[str, torch.Tensor]

__all__ = ["StreamConv1d", "StreamConvTranspose1d", "KyutaiEntry", "few_rows_linear", "State"]


@dataclass(frozen=True)
class KyutaiEntry:
    """One tensor of a Kyutai checkpoint: its key and shape in the file, the parameter or buffer
    it fills (``None``: checked, then dropped) and how it is converted to our layout."""

    key: str
    shape: Tuple[int, ...]
    target: Optional[str]
    convert: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # Kyutai -> ours is a pure layout change; ``export`` inverts it (for tests and round trips).
    export: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


def _is_exporting() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    try:
        return bool(torch.compiler.is_exporting()) or bool(torch.compiler.is_compiling())
    except AttributeError:  # older torch
        return False


def few_rows_linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x [..., in] @ w[out, in].T + b`` with the fastest CPU formulation for few rows.

    MKL's GEMM with exactly two rows (the codec's transformer and last convolutions run two
    25 Hz steps per frame) reads the weight at about half the speed of ``w @ x.T``; the two are
    the same product (same values up to summation order).
    """
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"few_rows_linear: input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] == 2 and x2.device.type == "cpu" and not _is_exporting():
        # x2 must be row-major (so that x2.T is a transposed operand): MKL is slow otherwise
        y = torch.mm(w, x2.contiguous().t()).t().contiguous()
        if b is not None:
            y.add_(b)
    else:
        y = F.linear(x2, w, b)
    return y.view(*lead, w.shape[0])


class StreamConv1d(nn.Module):
    """Causal ``Conv1d`` (groups 1) on ``[B, T, C_in]`` with its history as state.

    ``pre_elu``: apply ELU(alpha=1) to the input first (the SEANet activation that precedes
    most convolutions; the history then holds activated values, as in moshi).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, bias: bool = True, pad_mode: str = "constant",
                 pre_elu: bool = False):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', not {pad_mode!r}")
        eff = (kernel_size - 1) * dilation + 1
        if eff < stride:
            raise ValueError(f"kernel {kernel_size} (dilation {dilation}) shorter than stride {stride}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.pad_mode, self.pre_elu = pad_mode, pre_elu
        self.history = eff - stride
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size * in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.key = ""  # state key prefix, set by the owner (its module path)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)  # as nn.Conv1d's kaiming_uniform(a=sqrt 5)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    # ---- state ---------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        device = self.weight.device if device is None else device
        dtype = self.weight.dtype if dtype is None else dtype
        out: State = {}
        if self.history:
            out[self.key + "hist"] = torch.zeros(batch_size, self.history, self.in_channels,
                                                 device=device, dtype=dtype)
            if self.pad_mode == "replicate":
                out[self.key + "first"] = torch.ones(batch_size, device=device, dtype=torch.bool)
        return out

    # ---- compute -------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, state: State, out: State) -> torch.Tensor:
        """x ``[B, T, C_in]`` (T a multiple of the stride) -> ``[B, T / stride, C_out]``; reads
        this layer's entries of ``state`` and writes the new ones to ``out``."""
        B, T, C = x.shape
        s, H = self.stride, self.history
        if T % s:
            raise ValueError(f"{self.key or 'conv'}: {T} steps is not a multiple of the stride {s}")
        if self.pre_elu:
            x = F.elu(x)
        if H:
            hist = state[self.key + "hist"]
            if self.pad_mode == "replicate":
                first = state[self.key + "first"]
                hist = torch.where(first.view(B, 1, 1), x[:, :1].expand(B, H, C), hist)
                out[self.key + "first"] = torch.zeros_like(first)
            x = torch.cat([hist, x], dim=1)
            out[self.key + "hist"] = x[:, x.shape[1] - H:]
        K, d = self.kernel_size, self.dilation
        if K == 1:
            cols = x[:, ::s] if s > 1 else x
            t_out = cols.shape[1]
        else:
            win = x.unfold(1, (K - 1) * d + 1, s)  # [B, T_out, C, K_eff] (a view)
            if d > 1:
                win = win[..., ::d]
            t_out = win.shape[1]
            cols = win.transpose(2, 3)  # [B, T_out, K, C]: each window is K runs of C values
        # (windows overlap when K > stride: reshape may return an overlapping view; copy)
        y = few_rows_linear(cols.reshape(B * t_out, -1).contiguous(), self.weight, self.bias)
        return y.view(B, t_out, self.out_channels)

    # ---- checkpoint layout ---------------------------------------------------------------------
    def kyutai_entries(self, key_prefix: str, name_prefix: str) -> List[KyutaiEntry]:
        """``key_prefix``: the file prefix of the ``nn.Conv1d`` (e.g. ``encoder.model.0.conv.conv.``)."""
        co, ci, k = self.out_channels, self.in_channels, self.kernel_size
        entries = [KyutaiEntry(
            key_prefix + "weight", (co, ci, k), name_prefix + "weight",
            convert=lambda w: w.permute(0, 2, 1).reshape(co, k * ci),
            export=lambda w: w.view(co, k, ci).permute(0, 2, 1))]
        if self.bias is not None:
            entries.append(KyutaiEntry(key_prefix + "bias", (co,), name_prefix + "bias"))
        return entries

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, history={self.history}, "
                f"pad_mode={self.pad_mode}, pre_elu={self.pre_elu}")


class StreamConvTranspose1d(nn.Module):
    """Causal ``ConvTranspose1d`` on ``[B, T, C_in]`` with kernel ``K = stride`` or
    ``2 * stride`` (SEANet and Mimi's upsampler), groups 1 or depthwise (``groups = C``).

    The input times the weight gives, per input step, ``K`` output steps; the first ``stride``
    complete the current block with the tail kept from the previous call, the last ``K - stride``
    become the new tail (state, kept without bias as in moshi).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int = 1, bias: bool = True, pre_elu: bool = False):
        super().__init__()
        if kernel_size not in (stride, 2 * stride):
            raise ValueError(f"transposed conv: kernel {kernel_size} must be stride ({stride}) "
                             "or twice the stride")
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("transposed conv: groups must be 1 or depthwise (groups = channels)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.pre_elu = pre_elu
        self.depthwise = groups > 1
        self.tail = kernel_size - stride
        if self.depthwise:
            self.weight = nn.Parameter(torch.empty(kernel_size, out_channels))
        else:
            self.weight = nn.Parameter(torch.empty(kernel_size * out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.key = ""
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = (self.out_channels // self.groups) * self.kernel_size  # as nn.ConvTranspose1d
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        device = self.weight.device if device is None else device
        dtype = self.weight.dtype if dtype is None else dtype
        if not self.tail:
            return {}
        return {self.key + "tail": torch.zeros(batch_size, self.tail, self.out_channels,
                                               device=device, dtype=dtype)}

    def step(self, x: torch.Tensor, state: State, out: State) -> torch.Tensor:
        """x ``[B, T, C_in]`` -> ``[B, T * stride, C_out]``."""
        B, T, _ = x.shape
        s, K, C = self.stride, self.kernel_size, self.out_channels
        if self.pre_elu:
            x = F.elu(x)
        if self.depthwise:
            z = x.unsqueeze(2) * self.weight  # [B, T, K, C]
        else:
            z = few_rows_linear(x, self.weight)  # [B, T, K*C]
        z = z.view(B, T, K // s, s, C)
        head = z[:, :, 0]  # [B, T, s, C]
        if self.tail:
            prev = torch.cat([state[self.key + "tail"].view(B, 1, s, C), z[:, :, 1]], dim=1)
            out[self.key + "tail"] = prev[:, T]
            y = head + prev[:, :T]
        else:
            y = head
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(B, T * s, C)

    def kyutai_entries(self, key_prefix: str, name_prefix: str) -> List[KyutaiEntry]:
        ci, co, k = self.in_channels, self.out_channels, self.kernel_size
        if self.depthwise:
            entries = [KyutaiEntry(key_prefix + "weight", (ci, 1, k), name_prefix + "weight",
                                   convert=lambda w: w[:, 0, :].t(),
                                   export=lambda w: w.t().unsqueeze(1))]
        else:
            entries = [KyutaiEntry(key_prefix + "weight", (ci, co, k), name_prefix + "weight",
                                   convert=lambda w: w.permute(2, 1, 0).reshape(k * co, ci),
                                   export=lambda w: w.view(k, co, ci).permute(2, 1, 0))]
        if self.bias is not None:
            entries.append(KyutaiEntry(key_prefix + "bias", (co,), name_prefix + "bias"))
        return entries

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, pre_elu={self.pre_elu}")
