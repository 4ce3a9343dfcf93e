"""The Face Transformer and the face streams of a Moshi-Face model (paper: Moshi-Face).

* :class:`FaceTransformer`: non-causal over the N face-token positions of one frame. Input the
  conditioning vector ``e_all = h + e_text + sum(e_audio)`` [B, dim_in] of a frame (h: the temporal
  transformer's output; e_*: the LM input embeddings of the text and audio tokens generated in
  that frame); each position's query is ``proj(e_all) + pe[n]`` (+ the embedding of position n's
  face token of the previous frame when ``use_prev_tokens``; teacher forcing in training); output
  logits [B, N, K] for the N tokens, predicted in parallel.
* :class:`FaceLM`: what a Moshi-Face model adds to the LM: the 2N face input-stream embeddings
  (robot tokens of the previous frame, user tokens of this frame, each position its own
  ``nn.Embedding(K + 1, dim_in)``; id K = "no token yet") that are added to the temporal
  transformer's input sum, and the Face Transformer. The stream embeddings start at zero
  (``zero_init_streams``), so an untrained FaceLM leaves the LM's speech tokens unchanged.
* :func:`face_loss`: the stage-1 training loss (LM frozen): cross-entropy of the robot face tokens
  given teacher-forced text/audio/face inputs.

Checkpoints: :func:`save_face_lm` / :func:`load_face_lm` (safetensors, config in the metadata).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from facebot.io.atomic import atomic_path
from .transformer import StreamingTransformer
from .transformer_config import TransformerConfig

__all__ = ["FaceTransformerConfig", "FaceTransformer", "FaceLM", "face_loss", "save_face_lm",
           "load_face_lm", "FACE_LM_FORMAT"]

FACE_LM_FORMAT = "facebot-face-lm"


@dataclass
class FaceTransformerConfig:
    dim_in: int  # the LM's model dimension
    dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_tokens: int = 8  # N face tokens per frame
    codebook_size: int = 256  # K (the face codec's); id K is the "no token yet" input
    use_prev_tokens: bool = True  # False: the paper's "w/o t-1 face token input" ablation
    dim_feedforward: Optional[int] = None  # default 4 * dim

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} not divisible by num_heads {self.num_heads}")
        if min(self.dim_in, self.dim, self.num_layers, self.num_tokens, self.codebook_size) < 1:
            raise ValueError("dim_in, dim, num_layers, num_tokens and codebook_size must be >= 1")

    @property
    def initial_token(self) -> int:
        return self.codebook_size

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            d_model=self.dim, num_heads=self.num_heads, num_layers=self.num_layers,
            dim_feedforward=self.dim_feedforward or 4 * self.dim, causal=False,
            norm="layer_norm", positional_embedding="none", bias_ff=True, bias_attn=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FaceTransformerConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown FaceTransformerConfig keys: {sorted(unknown)}")
        return cls(**d)


class FaceTransformer(nn.Module):
    """e_all [B, dim_in] (or [B, S, dim_in]) + previous face tokens [B, N] (or [B, S, N], or None)
    -> logits [B, N, K] (or [B, S, N, K]); frames are independent (S is folded into the batch)."""

    def __init__(self, cfg: FaceTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.dim_in, cfg.dim)
        self.pos_query = nn.Parameter(torch.randn(cfg.num_tokens, cfg.dim) * 0.02)
        self.prev_emb = (nn.Embedding(cfg.codebook_size + 1, cfg.dim)
                         if cfg.use_prev_tokens else None)
        if self.prev_emb is not None:
            nn.init.normal_(self.prev_emb.weight, std=0.02)
        self.transformer = StreamingTransformer(cfg.transformer_config())
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.codebook_size)

    def forward(self, e_all: torch.Tensor, prev_tokens: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        c = self.cfg
        lead = e_all.shape[:-1]
        e = e_all.reshape(-1, e_all.shape[-1])  # [B', dim_in]
        q = self.in_proj(e).unsqueeze(1) + self.pos_query  # [B', N, dim]
        if self.prev_emb is not None:
            if prev_tokens is None:
                prev = torch.full((e.shape[0], c.num_tokens), c.initial_token,
                                  dtype=torch.long, device=e.device)
            else:
                prev = prev_tokens.reshape(-1, c.num_tokens).long()
            q = q + self.prev_emb(prev)
        y = self.out_norm(self.transformer(q))
        return self.out(y).view(*lead, c.num_tokens, c.codebook_size)


class FaceLM(nn.Module):
    """Face stream embeddings (2N) + Face Transformer: the parameters a Moshi-Face model adds."""

    def __init__(self, cfg: FaceTransformerConfig, zero_init_streams: bool = True):
        super().__init__()
        self.cfg = cfg
        n, k, d = cfg.num_tokens, cfg.codebook_size, cfg.dim_in
        self.robot_emb = nn.ModuleList([nn.Embedding(k + 1, d) for _ in range(n)])
        self.user_emb = nn.ModuleList([nn.Embedding(k + 1, d) for _ in range(n)])
        for e in list(self.robot_emb) + list(self.user_emb):
            if zero_init_streams:
                nn.init.zeros_(e.weight)
            else:
                nn.init.normal_(e.weight, std=d ** -0.5)
        self.face_transformer = FaceTransformer(cfg)

    def stream_embedding(self, robot_prev: torch.Tensor, user: Optional[torch.Tensor]
                         ) -> torch.Tensor:
        """robot_prev [B, N] / [B, S, N] (robot tokens of the previous frame), user (same shape,
        this frame's user tokens; None = "no token") -> summed embeddings [B, dim_in] /
        [B, S, dim_in] for the temporal transformer's input."""
        if user is None:
            user = torch.full_like(robot_prev, self.cfg.initial_token)
        x = None
        for n in range(self.cfg.num_tokens):
            e = self.robot_emb[n](robot_prev[..., n]) + self.user_emb[n](user[..., n])
            x = e if x is None else x + e
        return x


def face_loss(lm, face_lm: FaceLM, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Teacher-forced face cross-entropy with the LM frozen (its parameters are set to
    ``requires_grad=False``; gradients reach the FaceLM only).

    batch: ``tokens`` [B, 1 + n_q, S]: the LM's input sequence, already delayed and starting with
    the initial tokens (as :meth:`LMModel.forward_text`), so the model's tokens generated at
    position s are the model streams of position s + 1; ``robot_face`` [B, N, S]: the robot's
    face tokens generated at position s (the targets); ``user_face`` [B, N, S] (optional): the
    user's face tokens input at position s. Positions 0..S-2 are scored.
    """
    tokens = batch["tokens"]
    robot = batch["robot_face"].transpose(1, 2)  # [B, S, N]
    user = batch.get("user_face")
    user = None if user is None else user.transpose(1, 2)
    B, _, S = tokens.shape
    init = face_lm.cfg.initial_token
    prev = torch.cat([torch.full_like(robot[:, :1], init), robot[:, :-1]], 1)  # teacher forcing
    D = 1 + lm.cfg.dep_q  # text + the model's audio codebooks
    with torch.no_grad():
        x_lm = lm.embed_streams(tokens)  # [B, S, dim]
        gen = tokens[:, :D, 1:]
        e_gen = lm._embed(lm.text_emb, gen[:, 0])
        for k in range(lm.cfg.dep_q):
            e_gen = e_gen + lm._embed(lm.emb[k], gen[:, k + 1])
    x = x_lm + face_lm.stream_embedding(prev, user)
    for p in lm.parameters():
        p.requires_grad_(False)
    h = lm.out_norm(lm.transformer(x))  # gradients reach the face stream embeddings only
    e_all = h[:, :-1] + e_gen
    logits = face_lm.face_transformer(e_all, prev[:, :-1])  # [B, S-1, N, K]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), robot[:, :-1].reshape(-1).long())


def save_face_lm(model: FaceLM, path: Union[str, Path], meta: Optional[dict] = None) -> None:
    from safetensors.torch import save_file
    md = {"format": FACE_LM_FORMAT, "config": json.dumps(model.cfg.to_dict())}
    if meta:
        md.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=md)


def load_face_lm(path: Union[str, Path]) -> FaceLM:
    """A FaceLM from a file written by :func:`save_face_lm` (missing/unexpected keys are an error)."""
    from safetensors import safe_open
    from .checkpoint import CheckpointError, _check_path, load_state
    path = Path(path)
    _check_path(path)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        md = f.metadata() or {}
    if "config" not in md:
        raise CheckpointError(str(path), [], [], [], note=": no face LM config in the metadata")
    model = FaceLM(FaceTransformerConfig.from_dict(json.loads(md["config"])))
    load_state(model, path)
    return model.eval()
