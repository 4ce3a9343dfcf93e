"""Face codec: a VQ-VAE that turns 25 fps FLAME motion into N discrete tokens per 12.5 Hz frame.

Moshi-Face's face codec (a downsampling 1-D convolution plus a transformer layer, N = 8 latents
per downsampled frame quantised against a codebook of K = 256 entries of dimension C = 128,
trained with L1 reconstruction + quantisation + velocity losses), here made **causal and
streaming by default**; ``causal=False`` gives the paper's non-causal codec as an offline
baseline.

Data path (activations ``[B, T, channels]``, channels last, as in :mod:`facebot.model.conv`)::

    face [B, T, 56] --(x - mean) / std--> StreamConv1d(56 -> hidden, kernel 4, stride r = 2)
      -> GELU -> transformer (causal, attention window ``context`` frames) -> Linear(hidden -> N*C)
      -> N latents of dim C per frame -> nearest codebook entry each -> tokens [B, N, T/2]

    tokens -> codebook lookup -> concat [N*C] -> Linear(N*C -> hidden) -> transformer
      -> StreamConvTranspose1d(hidden -> hidden, kernel 2r, stride r) -> GELU
      -> StreamConv1d(hidden -> 56, kernel 3) -> * std + mean -> face [B, T, 56]

Tokens per frame
----------------
The frame latent (``N * C`` values) is split into N groups of C; each group is quantised
independently to its nearest entry of **one shared codebook** ``[K, C]`` (the paper's
description: N latents, each quantised in ``Z in R^{K x C}``), so the N tokens of a frame are
unordered-independent and all take values in ``0..K-1``. ``shared_codebook=False`` gives each
of the N positions its own K-entry codebook instead (a product quantiser); tokens keep the
same range and shape either way.

Codebook learning: exponential-moving-average k-means updates (decay ``ema_decay``) plus a
commitment loss ``||z - sg(q)||^2`` (the "quantisation loss" of the paper in its EMA form), and
dead-code restarts: an entry whose EMA usage count falls below ``dead_fraction`` of the uniform
share is replaced by a random encoder output of the current batch (:meth:`VectorQuantizer.restart_dead`,
called by the trainer). Usage starts at zero, so the first training step initialises the whole
codebook from data.

Streaming (``causal=True``)
---------------------------
``encode_step(face2 [B, 2, 56], state) -> (tokens [B, N, 1], state)`` and
``decode_step(tokens [B, N, 1], state) -> (face2 [B, 2, 56], state)``: one 80 ms step, two
FLAME frames, with no lookahead (frame pair ``(2t, 2t+1)`` gives token frame ``t``, which
decodes back to frames ``2t, 2t+1`` at once). The state is a flat ``dict[str, Tensor]`` with
static shapes: conv histories (``enc.down.hist``, ``dec.out.hist``), the transposed conv's
overlap tail (``dec.up.tail``) and the transformers' KV ring buffers and position counters
(``enc.tf.*``, ``dec.tf.*``); the KV slots are written in place, as in
:class:`facebot.model.transformer.StreamingTransformer`. The KV capacity equals the attention
window, and one position is fed per step, so the sliding window of the streaming step is exactly
the windowed mask of the offline pass: streaming equals offline (up to float summation order)
for any length, also long after the rings wrap.

The offline ``encode`` / ``decode`` start from the same zero state (causal zero padding), so
decoding a token sequence frame by frame gives the frames of decoding it whole.

The non-causal variant uses centred convolutions and full (unwindowed) bidirectional attention
over the clip; it has no streaming state and its ``init_*_state`` raise ``ValueError``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.io.atomic import atomic_path
from facebot.model.conv import StreamConv1d, StreamConvTranspose1d
from facebot.model.transformer import StreamingTransformer
from facebot.model.transformer_config import TransformerConfig

State = Dict[str, torch.Tensor]

__all__ = [
    "FaceCodecConfig",
    "FaceCodec",
    "VectorQuantizer",
    "LIP_DIMS",
    "normalized_perplexity",
    "save_face_codec",
    "load_face_codec",
]

# Lip-related dims of the 56-dim core [exp 0:50, jaw 50:53, neck 53:56]: the jaw rotation plus
# the first 10 expression coefficients (the mouth components, both in FLAME's PCA, where the
# leading components carry most mouth variance, and in facebot's default control basis, which
# puts every lip control on expression 0..9).
LIP_DIMS = tuple(range(0, 10)) + (50, 51, 52)


@dataclass
class FaceCodecConfig:
    input_dim: int = 56  # FLAME core: expression 50 + jaw 3 + neck 3
    hidden: int = 128  # transformer width
    codebook_size: int = 256  # K
    codebook_dim: int = 128  # C
    num_tokens: int = 8  # N tokens per 12.5 Hz frame
    downsample: int = 2  # r: 25 fps -> 12.5 Hz
    kernel_size: int = 4  # downsampling conv kernel, in 25 fps frames
    num_layers: int = 1  # transformer layers (encoder and decoder each)
    num_heads: int = 4
    dim_feedforward: int = 256
    context: int = 16  # attention window in 12.5 Hz frames (1.28 s); also the KV capacity
    causal: bool = True
    shared_codebook: bool = True  # one [K, C] codebook for the N positions (paper); else N
    ema_decay: float = 0.99
    dead_fraction: float = 0.03  # restart entries used less than this share of uniform use
    commitment_weight: float = 0.25
    velocity_weight: float = 1.0
    std_floor: float = 1e-3  # per-dim std used for normalisation is at least this

    def __post_init__(self) -> None:
        if self.downsample < 1 or self.kernel_size < self.downsample:
            raise ValueError("kernel_size must be >= downsample >= 1")
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden {self.hidden} not divisible by num_heads {self.num_heads}")
        if min(self.codebook_size, self.codebook_dim, self.num_tokens, self.context) < 1:
            raise ValueError("codebook_size, codebook_dim, num_tokens and context must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")

    @property
    def num_codebooks(self) -> int:
        return 1 if self.shared_codebook else self.num_tokens

    @property
    def frame_rate(self) -> float:
        return 25.0 / self.downsample

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            d_model=self.hidden, num_heads=self.num_heads, num_layers=self.num_layers,
            dim_feedforward=self.dim_feedforward, causal=self.causal,
            context=self.context if self.causal else None, norm="layer_norm",
            positional_embedding="rope", bias_ff=True, bias_attn=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FaceCodecConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown FaceCodecConfig keys: {sorted(unknown)}")
        return cls(**d)


def normalized_perplexity(tokens: torch.Tensor, codebook_size: int) -> float:
    """``exp(H) / K`` of the empirical distribution of ``tokens`` (any shape): 1.0 is uniform
    use of all K entries, 1/K a single entry."""
    counts = torch.bincount(tokens.reshape(-1).long(), minlength=codebook_size).double()
    if counts.sum() == 0:
        return 0.0
    p = counts / counts.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(h.exp() / codebook_size)


class VectorQuantizer(nn.Module):
    """G codebooks of K entries of dim C with EMA updates and dead-code restarts.

    Input latents ``[B, T, N, C]``; with G = 1 all N positions share the codebook, with G = N
    position n uses codebook n. Buffers (saved in checkpoints): ``embed [G, K, C]``,
    ``ema_count [G, K]``, ``ema_sum [G, K, C]``.
    """

    def __init__(self, num_codebooks: int, num_tokens: int, codebook_size: int, dim: int,
                 decay: float = 0.99, dead_fraction: float = 0.03, eps: float = 1e-5):
        super().__init__()
        self.G, self.N, self.K, self.C = num_codebooks, num_tokens, codebook_size, dim
        self.decay, self.dead_fraction, self.eps = decay, dead_fraction, eps
        self.register_buffer("embed", torch.randn(num_codebooks, codebook_size, dim))
        self.register_buffer("ema_count", torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("ema_sum", self.embed.clone() * 0.0)

    def _grouped(self, z: torch.Tensor) -> torch.Tensor:
        """[B, T, N, C] -> [G, M, C] (M = B*T*N/G vectors per codebook)."""
        B, T, N, C = z.shape
        if self.G == 1:
            return z.reshape(1, B * T * N, C)
        return z.permute(2, 0, 1, 3).reshape(N, B * T, C)

    def _ungrouped(self, g: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """Inverse of ``_grouped`` for [G, M, ...]."""
        rest = g.shape[2:]
        if self.G == 1:
            return g.reshape(B, T, self.N, *rest)
        return g.reshape(self.N, B, T, *rest).movedim(0, 2)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest entries: latents [B, T, N, C] -> codes [B, T, N] (int64)."""
        B, T = z.shape[:2]
        g = self._grouped(z)
        e = self.embed.to(z.dtype)
        dist = (g * g).sum(-1, keepdim=True) - 2 * torch.bmm(g, e.transpose(1, 2)) \
            + (e * e).sum(-1)[:, None, :]
        return self._ungrouped(dist.argmin(-1), B, T)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, N] -> vectors [B, T, N, C]."""
        if self.G == 1:
            return self.embed[0][codes]
        idx = torch.arange(self.N, device=codes.device)
        return self.embed[idx, codes]

    def forward(self, z: torch.Tensor, update: bool = False):
        """-> (straight-through quantised [B,T,N,C], codes [B,T,N], commitment loss, batch
        normalised perplexity per codebook [G]). ``update``: EMA step of the codebook (after
        quantising with the current one)."""
        codes = self.codes(z.detach())
        q = self.lookup(codes).to(z.dtype)
        commit = F.mse_loss(z, q.detach())
        g_codes = self._grouped(codes.unsqueeze(-1)).squeeze(-1)  # [G, M]
        onehot = F.one_hot(g_codes, self.K).to(z.dtype)  # [G, M, K]
        counts = onehot.sum(1)  # [G, K]
        p = counts / counts.sum(-1, keepdim=True).clamp(min=1)
        ppl = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum(-1)) / self.K
        if update:
            with torch.no_grad():
                sums = torch.bmm(onehot.transpose(1, 2), self._grouped(z.detach()))  # [G, K, C]
                d = self.decay
                self.ema_count.mul_(d).add_(counts.to(self.ema_count.dtype), alpha=1 - d)
                self.ema_sum.mul_(d).add_(sums.to(self.ema_sum.dtype), alpha=1 - d)
                n = self.ema_count.sum(-1, keepdim=True)
                smoothed = (self.ema_count + self.eps) / (n + self.K * self.eps) * n
                used = self.ema_count > self.eps
                new = self.ema_sum / smoothed.clamp(min=self.eps)[..., None]
                self.embed.copy_(torch.where(used[..., None], new, self.embed))
        q_st = z + (q - z).detach()
        return q_st, codes, commit, ppl.detach()

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> int:
        """Replace entries whose EMA usage is below ``dead_fraction`` of the uniform share of a
        batch by random latents of ``z`` [B, T, N, C] (this batch's encoder outputs). Returns the
        number of entries restarted."""
        g = self._grouped(z.detach().to(self.embed.dtype))  # [G, M, C]
        M = g.shape[1]
        threshold = self.dead_fraction * M / self.K
        dead = self.ema_count < threshold  # [G, K]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pick = torch.randint(0, M, (self.G, self.K), generator=generator, device=g.device)
        cand = torch.gather(g, 1, pick[..., None].expand(-1, -1, self.C))  # [G, K, C]
        self.embed.copy_(torch.where(dead[..., None], cand, self.embed))
        self.ema_sum.copy_(torch.where(dead[..., None], cand, self.ema_sum))
        self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))
        return n_dead


def _conv_centered(conv: StreamConv1d, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Offline (non-causal) application of a StreamConv1d's weights with explicit zero padding."""
    B = x.shape[0]
    xp = F.pad(x, (0, 0, left, right))
    K, s = conv.kernel_size, conv.stride
    win = xp.unfold(1, K, s)  # [B, T_out, C, K]
    t_out = win.shape[1]
    cols = win.transpose(2, 3).reshape(B * t_out, -1)
    return F.linear(cols, conv.weight, conv.bias).view(B, t_out, conv.out_channels)


class FaceCodec(nn.Module):
    """The face VQ-VAE; see the module docstring for the layout, tokens and streaming state."""

    def __init__(self, cfg: Optional[FaceCodecConfig] = None):
        super().__init__()
        cfg = cfg or FaceCodecConfig()
        self.cfg = cfg
        D, H, N, C = cfg.input_dim, cfg.hidden, cfg.num_tokens, cfg.codebook_dim
        self.register_buffer("mean", torch.zeros(D))
        self.register_buffer("std", torch.ones(D))
        self.enc_down = StreamConv1d(D, H, cfg.kernel_size, stride=cfg.downsample)
        self.enc_down.key = "enc.down."
        self.enc_tf = StreamingTransformer(cfg.transformer_config())
        self.enc_out = nn.Linear(H, N * C)
        self.quantizer = VectorQuantizer(cfg.num_codebooks, N, cfg.codebook_size, C,
                                         cfg.ema_decay, cfg.dead_fraction)
        self.dec_in = nn.Linear(N * C, H)
        self.dec_tf = StreamingTransformer(cfg.transformer_config())
        self.dec_up = StreamConvTranspose1d(H, H, 2 * cfg.downsample, cfg.downsample)
        self.dec_up.key = "dec.up."
        self.dec_out = StreamConv1d(H, D, 3)
        self.dec_out.key = "dec.out."

    # ---- normalisation ----------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, mean, std) -> None:
        """Per-dimension statistics of the training set (std floored at ``cfg.std_floor``)."""
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(-1)
        if mean.numel() != self.cfg.input_dim or std.numel() != self.cfg.input_dim:
            raise ValueError(f"normalisation needs {self.cfg.input_dim} values per statistic")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=self.cfg.std_floor))

    def normalize(self, face: torch.Tensor) -> torch.Tensor:
        return (face - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    # ---- checks -----------------------------------------------------------------------------
    def _check_face(self, face: torch.Tensor, frames: Optional[int] = None) -> None:
        c = self.cfg
        if face.dim() != 3 or face.shape[-1] != c.input_dim:
            raise ValueError(f"face must be [B, T, {c.input_dim}], got {list(face.shape)}")
        if frames is not None and face.shape[1] != frames:
            raise ValueError(f"a streaming step takes {frames} frames, got {face.shape[1]}")
        if face.shape[1] % c.downsample:
            raise ValueError(f"T = {face.shape[1]} frames is not a multiple of r = {c.downsample}")

    def _check_tokens(self, tokens: torch.Tensor, frames: Optional[int] = None) -> None:
        c = self.cfg
        if tokens.dim() != 3 or tokens.shape[1] != c.num_tokens:
            raise ValueError(f"tokens must be [B, {c.num_tokens}, T'], got {list(tokens.shape)}")
        if frames is not None and tokens.shape[2] != frames:
            raise ValueError(f"a streaming step takes {frames} token frame, got {tokens.shape[2]}")

    def _need_causal(self) -> None:
        if not self.cfg.causal:
            raise ValueError("the non-causal face codec is offline only: no streaming state")

    # ---- offline ----------------------------------------------------------------------------
    def _encode_latents(self, xn: torch.Tensor) -> torch.Tensor:
        """normalised face [B, T, D] -> latents [B, T/r, N, C]."""
        c = self.cfg
        if c.causal:
            h = self.enc_down.step(xn, self.enc_down.init_state(xn.shape[0], xn.device, xn.dtype), {})
        else:
            pad = c.kernel_size - c.downsample
            h = _conv_centered(self.enc_down, xn, pad // 2, pad - pad // 2)
        h = self.enc_tf(F.gelu(h))
        z = self.enc_out(h)
        return z.view(z.shape[0], z.shape[1], c.num_tokens, c.codebook_dim)

    def _decode_latents(self, q: torch.Tensor) -> torch.Tensor:
        """quantised latents [B, T', N, C] -> normalised face [B, T'*r, D]."""
        B, T = q.shape[:2]
        h = self.dec_tf(self.dec_in(q.reshape(B, T, -1)))
        h = F.gelu(self.dec_up.step(h, self.dec_up.init_state(B, h.device, h.dtype), {}))
        if self.cfg.causal:
            return self.dec_out.step(h, self.dec_out.init_state(B, h.device, h.dtype), {})
        return _conv_centered(self.dec_out, h, 1, 1)

    def forward(self, face: torch.Tensor, update_codebook: bool = False) -> dict:
        """Training pass on raw FLAME ``face [B, T, D]``: losses (in normalised units) and
        outputs. ``update_codebook``: EMA step of the codebook."""
        self._check_face(face)
        c = self.cfg
        xn = self.normalize(face)
        z = self._encode_latents(xn)
        q, codes, commit, ppl = self.quantizer(z, update=update_codebook)
        yn = self._decode_latents(q)
        rec = (yn - xn).abs().mean()
        vel = ((yn[:, 1:] - yn[:, :-1]) - (xn[:, 1:] - xn[:, :-1])).abs().mean()
        loss = rec + c.velocity_weight * vel + c.commitment_weight * commit
        return {"loss": loss, "rec": rec, "vel": vel, "commit": commit, "perplexity": ppl,
                "latents": z, "codes": codes, "recon_norm": yn}

    def encode(self, face: torch.Tensor) -> torch.Tensor:
        """face [B, T, D] (T a multiple of r) -> tokens [B, N, T/r] (int64)."""
        self._check_face(face)
        z = self._encode_latents(self.normalize(face))
        return self.quantizer.codes(z).transpose(1, 2)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, T'] -> face [B, T'*r, D]."""
        self._check_tokens(tokens)
        q = self.quantizer.lookup(tokens.long().transpose(1, 2))
        return self.denormalize(self._decode_latents(q))

    # ---- streaming --------------------------------------------------------------------------
    def init_encoder_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._need_causal()
        st = dict(self.enc_down.init_state(batch_size, device, dtype))
        for k, v in self.enc_tf.init_state(batch_size, device, dtype).items():
            st["enc.tf." + k] = v
        return st

    def init_decoder_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._need_causal()
        st: State = {}
        for k, v in self.dec_tf.init_state(batch_size, device, dtype).items():
            st["dec.tf." + k] = v
        st.update(self.dec_up.init_state(batch_size, device, dtype))
        st.update(self.dec_out.init_state(batch_size, device, dtype))
        return st

    @staticmethod
    def _sub(state: State, prefix: str) -> State:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def encode_step(self, face: torch.Tensor, state: State) -> Tuple[torch.Tensor, State]:
        """face [B, r, D] (two frames, 80 ms) -> (tokens [B, N, 1], new state)."""
        self._need_causal()
        c = self.cfg
        self._check_face(face, c.downsample)
        new: State = {}
        h = self.enc_down.step(self.normalize(face), state, new)
        h, tf = self.enc_tf.step(F.gelu(h), self._sub(state, "enc.tf."))
        new.update({"enc.tf." + k: v for k, v in tf.items()})
        z = self.enc_out(h).view(face.shape[0], 1, c.num_tokens, c.codebook_dim)
        return self.quantizer.codes(z).transpose(1, 2), new

    def decode_step(self, tokens: torch.Tensor, state: State, slots: bool = False) -> Tuple[torch.Tensor, State]:
        """tokens [B, N, 1] -> (face [B, r, D], new state). ``slots``: the transformer's KV
        buffers are left alone and the new state holds their new slots
        (``StreamingTransformer.step_slots``, the form exported graphs take)."""
        self._need_causal()
        self._check_tokens(tokens, 1)
        B = tokens.shape[0]
        q = self.quantizer.lookup(tokens.long().transpose(1, 2))
        step = self.dec_tf.step_slots if slots else self.dec_tf.step
        h, tf = step(self.dec_in(q.reshape(B, 1, -1)), self._sub(state, "dec.tf."))
        new: State = {"dec.tf." + k: v for k, v in tf.items()}
        h = F.gelu(self.dec_up.step(h, state, new))
        y = self.dec_out.step(h, state, new)
        return self.denormalize(y), new

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---- model-only checkpoints -------------------------------------------------------------------

def save_face_codec(model: FaceCodec, path: Union[str, Path], meta: Optional[dict] = None) -> None:
    """Weights, codebook and normalisation buffers as safetensors, config in the metadata."""
    from safetensors.torch import save_file
    md = {"format": "facebot-face-codec", "config": json.dumps(model.cfg.to_dict())}
    if meta:
        md.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=md)


def load_face_codec(path: Union[str, Path], prefix: str = "") -> FaceCodec:
    """A FaceCodec from a file written by :func:`save_face_codec` or by the trainer (whose model
    tensors carry the ``model.`` prefix: found automatically)."""
    from safetensors import safe_open
    from facebot.model.checkpoint import CheckpointError, _check_path, load_state
    path = Path(path)
    _check_path(path)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        md = f.metadata() or {}
        if "config" not in md:
            raise CheckpointError(str(path), [], [], [], note=": no face codec config in the metadata")
        keys = list(f.keys())
        if not prefix and any(k.startswith("model.") for k in keys):
            prefix = "model."
        tensors = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
    model = FaceCodec(FaceCodecConfig.from_dict(json.loads(md["config"])))
    load_state(model, tensors)
    return model.eval()
