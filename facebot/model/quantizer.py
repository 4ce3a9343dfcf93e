"""Split residual vector quantizer (Mimi's), inference only.

The latent ``[B, T, input_dim]`` is projected twice: the "semantic" part (``n_q_semantic``
codebooks, 1 in Mimi) and the "acoustic" rest, each with its own input and output projection
(1x1 convolutions in moshi), and each quantized by a residual VQ: code ``k`` is the nearest
codeword (Euclidean) to what the previous codebooks left over. Decoding sums the codewords of
each part and projects them back.

Codebooks are stored as plain embeddings ``[num_codebooks, bins, dim]`` (moshi keeps EMA
statistics and divides on the fly: ``embedding_sum / cluster_usage.clamp(min=1e-5)``; the
importer does that division once). Only the ``num_codebooks`` codebooks in use are kept (Moshi
uses 8 of Mimi's 32). Distances use ``|e|^2 - 2 x.e`` (one matrix product per codebook; the
``|x|^2`` term does not change the argmin), exportable as MatMul + ArgMin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn

from .conv import KyutaiEntry, few_rows_linear

__all__ = ["QuantizerConfig", "SplitResidualVQ"]

CODEBOOK_EPS = 1e-5  # moshi's EuclideanCodebook epsilon


@dataclass(frozen=True)
class QuantizerConfig:
    dimension: int = 256  # codeword size
    input_dimension: int = 512
    output_dimension: int = 512
    bins: int = 2048
    n_q: int = 32  # codebooks in the checkpoint
    num_codebooks: int = 8  # codebooks used (Moshi: 8)
    n_q_semantic: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.n_q_semantic < self.n_q:
            raise ValueError("need 0 < n_q_semantic < n_q")
        if not self.n_q_semantic <= self.num_codebooks <= self.n_q:
            raise ValueError(f"num_codebooks must be in [{self.n_q_semantic}, {self.n_q}]")

    def moshi_kwargs(self) -> dict:
        return dict(dimension=self.dimension, n_q=self.n_q, bins=self.bins,
                    input_dimension=self.input_dimension,
                    output_dimension=self.output_dimension, n_q_semantic=self.n_q_semantic)


class SplitResidualVQ(nn.Module):
    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        d, i, o = cfg.dimension, cfg.input_dimension, cfg.output_dimension
        self.in_proj_first = nn.Parameter(torch.empty(d, i))
        self.in_proj_rest = nn.Parameter(torch.empty(d, i))
        self.out_proj_first = nn.Parameter(torch.empty(o, d))
        self.out_proj_rest = nn.Parameter(torch.empty(o, d))
        for p in (self.in_proj_first, self.in_proj_rest):
            nn.init.uniform_(p, -i ** -0.5, i ** -0.5)
        for p in (self.out_proj_first, self.out_proj_rest):
            nn.init.uniform_(p, -d ** -0.5, d ** -0.5)
        self.register_buffer("codebooks", torch.zeros(cfg.num_codebooks, cfg.bins, d))
        # derived, refreshed by set_codebooks() / load_state_dict()
        self.register_buffer("codebook_sqnorm", torch.zeros(cfg.num_codebooks, cfg.bins),
                             persistent=False)
        # [K, dim, bins]: v @ E^T with E^T contiguous reads the codebook ~3x faster than with
        # the transposed view (one-row GEMV, MKL)
        self.register_buffer("codebooks_t", torch.zeros(cfg.num_codebooks, d, cfg.bins),
                             persistent=False)
        self.register_buffer("code_offsets", torch.arange(cfg.num_codebooks) * cfg.bins,
                             persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())

    # ---- codebooks -----------------------------------------------------------------------------
    @torch.no_grad()
    def refresh(self) -> None:
        self.codebook_sqnorm.copy_(self.codebooks.pow(2).sum(-1))
        self.codebooks_t.copy_(self.codebooks.transpose(1, 2))

    @torch.no_grad()
    def set_codebooks(self, embeddings: torch.Tensor) -> None:
        """``embeddings [num_codebooks, bins, dim]``."""
        self.codebooks.copy_(embeddings)
        self.refresh()

    # ---- encode --------------------------------------------------------------------------------
    def _nearest(self, v: torch.Tensor, k: int) -> torch.Tensor:
        # |e|^2 - 2 v.e  -> [N, bins]
        scores = torch.addmm(self.codebook_sqnorm[k], v, self.codebooks_t[k], alpha=-2.0)
        return scores.argmin(dim=-1)

    def _rvq(self, v: torch.Tensor, k0: int, k1: int, codes: List[torch.Tensor]) -> None:
        for k in range(k0, k1):
            c = self._nearest(v, k)
            codes.append(c)
            if k + 1 < k1:
                v = v - self.codebooks[k][c]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, T, input_dim]`` -> codes ``[B, num_codebooks, T]`` (int64)."""
        B, T, C = x.shape
        xf = x.reshape(B * T, C)
        cfg = self.cfg
        codes: List[torch.Tensor] = []
        self._rvq(few_rows_linear(xf, self.in_proj_first), 0, cfg.n_q_semantic, codes)
        if cfg.num_codebooks > cfg.n_q_semantic:
            self._rvq(few_rows_linear(xf, self.in_proj_rest), cfg.n_q_semantic, cfg.num_codebooks, codes)
        return torch.stack(codes, dim=0).view(-1, B, T).transpose(0, 1)

    # ---- decode --------------------------------------------------------------------------------
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, T]`` (K <= num_codebooks) -> latent ``[B, T, output_dim]``."""
        B, K, T = codes.shape
        cfg = self.cfg
        if not cfg.n_q_semantic <= K <= cfg.num_codebooks:
            raise ValueError(f"decode: {K} codebooks given, expected {cfg.n_q_semantic}.."
                             f"{cfg.num_codebooks}")
        table = self.codebooks.view(-1, cfg.dimension)
        idx = codes + self.code_offsets[:K].view(1, K, 1)
        emb = nn.functional.embedding(idx, table)  # [B, K, T, dim]
        s = cfg.n_q_semantic
        first = emb[:, 0] if s == 1 else emb[:, :s].sum(1)
        out = few_rows_linear(first, self.out_proj_first)
        if K > s:
            out = out + few_rows_linear(emb[:, s:].sum(1), self.out_proj_rest)
        return out

    # ---- checkpoint layout ---------------------------------------------------------------------
    def kyutai_entries(self, key_prefix: str, name_prefix: str) -> List[KyutaiEntry]:
        cfg = self.cfg
        d, i, o = cfg.dimension, cfg.input_dimension, cfg.output_dimension
        entries: List[KyutaiEntry] = []
        for part, n in (("first", cfg.n_q_semantic), ("rest", cfg.n_q - cfg.n_q_semantic)):
            kp = f"{key_prefix}rvq_{part}."
            entries.append(KyutaiEntry(kp + "input_proj.weight", (d, i, 1),
                                       f"{name_prefix}in_proj_{part}",
                                       convert=lambda w: w[:, :, 0], export=lambda w: w[:, :, None]))
            entries.append(KyutaiEntry(kp + "output_proj.weight", (o, d, 1),
                                       f"{name_prefix}out_proj_{part}",
                                       convert=lambda w: w[:, :, 0], export=lambda w: w[:, :, None]))
            for layer in range(n):
                cb = f"{kp}vq.layers.{layer}._codebook."
                # assembled by load_kyutai_codebooks (two tensors per codebook)
                entries.append(KyutaiEntry(cb + "embedding_sum", (cfg.bins, d), None))
                entries.append(KyutaiEntry(cb + "cluster_usage", (cfg.bins,), None))
                entries.append(KyutaiEntry(cb + "_initialized", (1,), None))
        return entries

    def kyutai_codebook_keys(self, key_prefix: str) -> List[str]:
        """Checkpoint prefix of each codebook in use, in code order."""
        cfg = self.cfg
        out = []
        for k in range(cfg.num_codebooks):
            part, layer = ("first", k) if k < cfg.n_q_semantic else ("rest", k - cfg.n_q_semantic)
            out.append(f"{key_prefix}rvq_{part}.vq.layers.{layer}._codebook.")
        return out

    @torch.no_grad()
    def load_kyutai_codebooks(self, sd: Dict[str, torch.Tensor], key_prefix: str) -> None:
        embs = []
        for cb in self.kyutai_codebook_keys(key_prefix):
            esum = sd[cb + "embedding_sum"].float()
            usage = sd[cb + "cluster_usage"].float()
            embs.append(esum / usage.clamp(min=CODEBOOK_EPS)[:, None])
        self.set_codebooks(torch.stack(embs).to(self.codebooks.dtype))

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"dim={c.dimension}, bins={c.bins}, codebooks={c.num_codebooks}/{c.n_q}, "
                f"semantic={c.n_q_semantic}")
