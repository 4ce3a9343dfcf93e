"""Moshi-Face training at small scale: data prep, stage 2 (Face Transformer, LM frozen), stage 3
(joint, per-module learning rates), and teacher-forced / face-free-running evaluation.

Stages (paper: codec first; then the Face Transformer with the LM frozen; then all jointly):

1. the face codec (:func:`facebot.train.codec_train.train_codec`) on the corpus' training faces;
2. :func:`train_face_lm` stage 2: the :class:`FaceLM` (face stream embeddings + Face Transformer)
   with the LM frozen (:func:`facebot.model.face_transformer.face_loss`);
3. :func:`train_face_lm` stage 3 (``joint=True``): face loss + the LM's own audio-token loss,
   everything trainable, the LM at a lower learning rate.

**Scale and what the LM is.** The LM is the ``tiny`` config with *random, seeded* weights (no
pretrained Moshi exists at this size): its temporal transformer is untrained, so ``h`` carries
only what its random layers pass through; the information about the robot's voice reaches the
Face Transformer mostly through ``e_all``'s audio-code embeddings (the robot's Mimi tokens of the
frame) and through ``h`` as a random feature of the inputs. Mimi is ``MimiConfig.tiny`` with
``bins = card`` (40), random seeded weights, and codebooks drawn from the data (each RVQ level's
entries are random residual vectors of the training audio), so the codes carry information about
the audio (energy, spectrum) although Mimi was never trained. The text stream is the padding id
throughout (no tokenizer).

**Sequence layout** (mirrors :class:`facebot.runtime.lm_step.LMStep` exactly): for a clip of T'
12.5 Hz frames the LM input is ``tokens [1 + n_q, S = T']``; at position p the model's streams
(text, robot audio 1..dep_q) carry the token of time ``p - 1 - delay_k`` and the user's streams
(partner audio) the token of time ``p - delay_k``; a stream carries its initial token
(``text_card`` / ``card``) before it starts. The Face Transformer at position p predicts the
robot's face tokens of time ``p - 1`` (the time of the acoustic tokens generated at p, as
:class:`facebot.runtime.face_lm_step.FaceLMStep`); position 0's target is time 0's tokens.
``user_face[:, p]`` is the partner's face tokens of time p, made by
:func:`facebot.runtime.user_face.user_face_tokens` (the run-time rule: the no-face token where
the partner's face was not seen). Predictions cover times
``0 .. T' - 3`` (positions 1 .. S - 2; the last position has no generated tokens to condition on).

**Evaluation** (test split, clips of ``clip_s`` seconds, inside the tiny LM's 64-frame context):

* teacher-forced: ground-truth audio tokens and the ground-truth previous robot face tokens;
* face free-running: ground-truth audio tokens (both sides, as the paper's teacher-forced AV-sync
  setting) but the Face Transformer consumes its *own* previous face tokens, greedy, frame by
  frame -- the same computation as :class:`FaceLMStep` with the speech forced to the recording.
  A fully free run (the LM also generating the robot's speech) is not evaluated: with an
  untrained LM and untrained Mimi decoder the generated speech is noise, so lip sync against it
  says nothing.

Decoded faces (codec decoder, FLAME core [T, 56]) are scored with ``lip_sync(robot audio, jaw)``
(best correlation within +-0.2 s), ``mean_error`` and ``lip_error`` against the ground truth.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from facebot.io.atomic import atomic_path
from ..model.codec import MimiCodec, MimiConfig
from ..model.configs import get_config
from ..model.face_codec import FaceCodec
from ..model.face_transformer import FaceLM, face_loss, save_face_lm
from ..model.lm import LMModel
from ..runtime.user_face import user_face_tokens
from .datasets import DyadicDataset
from . import metrics

__all__ = ["make_mimi", "fit_random_codebooks", "build_tokens", "prepare_split", "train_face_lm",
           "predict_face_tokens", "decode_faces", "score", "evaluate", "save_checkpoints", "make_lm",
           "mimi_codes", "SAMPLE_RATE"]

SAMPLE_RATE = 24000


# ---- Mimi (tiny, random) --------------------------------------------------------------------

def make_mimi(card: int, seed: int = 0) -> MimiCodec:
    """Tiny Mimi with ``bins = card`` and seeded random weights (codebooks still zero: call
    :func:`fit_random_codebooks`)."""
    cfg = MimiConfig.tiny()
    cfg = cfg.replace(quantizer=dataclasses.replace(cfg.quantizer, bins=card))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = MimiCodec(cfg)
    return m.eval()


@torch.no_grad()
def _mimi_latent(m: MimiCodec, pcm: torch.Tensor) -> torch.Tensor:
    """pcm [B, 1, T] -> the quantizer's input [B, T', C] (MimiCodec.encode up to the VQ)."""
    pad = (-pcm.shape[-1]) % m.frame_size
    if pad:
        pcm = F.pad(pcm, (0, pad))
    B = pcm.shape[0]
    x = m.encoder.step(pcm.transpose(1, 2), m.encoder.init_state(B), {})
    x = m.encoder_transformer(x)
    return m.downsample.step(x, m.downsample.init_state(B), {})


@torch.no_grad()
def fit_random_codebooks(m: MimiCodec, audios: List[np.ndarray], seed: int = 0) -> None:
    """Codebooks of random data points: each RVQ level's ``bins`` entries are residual vectors
    of the given audio drawn at random (so codes separate the audio's frames)."""
    from ..model.prepared_weights import linear
    q = m.quantizer
    cfg = q.cfg
    lat = torch.cat([_mimi_latent(m, torch.from_numpy(a).float().view(1, 1, -1))[0] for a in audios])
    g = torch.Generator().manual_seed(seed)
    cbs = torch.zeros_like(q.codebooks)
    groups = [(q.in_proj_first, 0, cfg.n_q_semantic)]
    if cfg.num_codebooks > cfg.n_q_semantic:
        groups.append((q.in_proj_rest, cfg.n_q_semantic, cfg.num_codebooks))
    for proj, k0, k1 in groups:
        v = linear(lat, proj)
        for k in range(k0, k1):
            idx = torch.randperm(v.shape[0], generator=g)[:cfg.bins]
            cb = v[idx]
            if cb.shape[0] < cfg.bins:  # too little data: jitter copies
                extra = cb[torch.randint(cb.shape[0], (cfg.bins - cb.shape[0],), generator=g)]
                cb = torch.cat([cb, extra + 1e-3 * torch.randn(extra.shape, generator=g)])
            cbs[k] = cb
            c = torch.cdist(v, cb).argmin(-1)
            v = v - cb[c]
    q.set_codebooks(cbs)


@torch.no_grad()
def mimi_codes(m: MimiCodec, audio: np.ndarray) -> torch.Tensor:
    """audio [N] -> codes [8, N / 1920]."""
    return m.encode(torch.from_numpy(np.ascontiguousarray(audio)).float().view(1, 1, -1))[0]


# ---- token layout ---------------------------------------------------------------------------

def build_tokens(lm_cfg, robot_codes: torch.Tensor, user_codes: torch.Tensor,
                 text_id: Optional[int] = None) -> torch.Tensor:
    """robot_codes / user_codes [n_audio, T'] -> the LM's input ``tokens [1 + n_q, T']`` (module
    doc: model streams carry time p - 1 - delay, user streams time p - delay, initial tokens
    before a stream starts). ``text_id``: the text token at every time (default: padding, 3), or
    a tensor [T'] of text tokens by time."""
    dq, nq = lm_cfg.dep_q, lm_cfg.n_q
    T = robot_codes.shape[1]
    text_id = 3 if text_id is None else text_id
    K = 1 + nq
    src = torch.empty(K, T, dtype=torch.long)
    src[0] = torch.as_tensor(text_id, dtype=torch.long)
    src[1:1 + dq] = robot_codes[:dq]
    src[1 + dq:] = user_codes[:nq - dq]
    out = torch.empty(K, T, dtype=torch.long)
    p = torch.arange(T)
    for k in range(K):
        d = lm_cfg.delays[k]
        shift = d + (1 if k <= dq else 0)
        t = p - shift
        init = lm_cfg.text_card if k == 0 else lm_cfg.card
        row = torch.full((T,), init, dtype=torch.long)
        ok = t >= 0
        if k > dq:
            ok = ok & (p > d)  # LMStep feeds the initial token while offset <= delay
        row[ok] = src[k, t[ok]]
        out[k] = row
    return out


def _face_targets(robot_face: torch.Tensor) -> torch.Tensor:
    """robot face tokens [N, T'] by time -> targets by position (time p - 1; p = 0 -> time 0)."""
    return torch.cat([robot_face[:, :1], robot_face[:, :-1]], 1)


def prepare_split(root, split: str, mimi: MimiCodec, codec: FaceCodec, lm_cfg, clip_s: float = 4.0
                  ) -> Dict[str, object]:
    """Every clip (both speakers as the robot) of a split -> a batch dict: ``tokens`` [B, 17, S],
    ``robot_face`` [B, N, S] (targets by position), ``user_face`` [B, N, S], ``robot_face_time``
    [B, N, S] (by time), plus numpy ``audio`` [B, n] (robot), ``face`` [B, T, 56] (robot GT)."""
    ds = DyadicDataset(root, split, clip_s=clip_s)
    toks, rf, uf, rft, audio, face, ids = [], [], [], [], [], [], []
    for item in ds:
        rc = mimi_codes(mimi, item["audio_self"])
        uc = mimi_codes(mimi, item["audio_partner"])
        with torch.no_grad():
            fr = codec.encode(torch.from_numpy(item["face_self"]).float()[None])[0]
            # the user's stream as the model gets it at run time (no-face token without a face)
            fu = user_face_tokens(codec, item["face_partner"], item.get("present_partner"))
        T = min(rc.shape[1], uc.shape[1], fr.shape[1], fu.shape[1])
        toks.append(build_tokens(lm_cfg, rc[:, :T], uc[:, :T],
                                 getattr(lm_cfg, "existing_text_padding_id", 3)))
        rf.append(_face_targets(fr[:, :T]))
        rft.append(fr[:, :T])
        uf.append(fu[:, :T])
        audio.append(item["audio_self"])
        face.append(item["face_self"])
        ids.append(item["id"])
    if not toks:
        raise ValueError(f"no clips in split {split!r}")
    return {"tokens": torch.stack(toks), "robot_face": torch.stack(rf), "user_face": torch.stack(uf),
            "robot_face_time": torch.stack(rft), "audio": np.stack(audio), "face": np.stack(face),
            "ids": ids}


# ---- training -------------------------------------------------------------------------------

def _temporal_pass(lm: LMModel, face_lm: FaceLM, tokens, prev, user):
    """Teacher-forced temporal pass with the face streams: (h after out_norm, the tokens
    generated at each position, their summed input embeddings = e_text + sum(e_audio))."""
    x = lm.embed_streams(tokens) + face_lm.stream_embedding(prev, user)
    h = lm.out_norm(lm.transformer(x))
    gen = tokens[:, :1 + lm.cfg.dep_q, 1:]
    e_gen = lm._embed(lm.text_emb, gen[:, 0])
    for k in range(lm.cfg.dep_q):
        e_gen = e_gen + lm._embed(lm.emb[k], gen[:, k + 1])
    return h, gen, e_gen


def _joint_loss(lm: LMModel, face_lm: FaceLM, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """(face CE, LM audio CE) with gradients to both (stage 3)."""
    tokens = batch["tokens"]
    robot = batch["robot_face"].transpose(1, 2)
    user = batch["user_face"].transpose(1, 2)
    init = face_lm.cfg.initial_token
    prev = torch.cat([torch.full_like(robot[:, :1], init), robot[:, :-1]], 1)
    h, gen, e_gen = _temporal_pass(lm, face_lm, tokens, prev, user)
    logits = face_lm.face_transformer(h[:, :-1] + e_gen, prev[:, :-1])
    lf = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), robot[:, :-1].reshape(-1).long())
    al = lm.forward_depformer(h[:, :-1], gen)  # [B, dep_q, S-1, card]
    tgt = gen[:, 1:]
    mask = tgt < lm.cfg.card  # skip initial tokens
    la = F.cross_entropy(al.permute(0, 3, 1, 2), tgt.clamp(max=lm.cfg.card - 1),
                         reduction="none")
    la = (la * mask).sum() / mask.sum().clamp(min=1)
    return lf, la


def train_face_lm(lm: LMModel, face_lm: FaceLM, data: Dict[str, torch.Tensor], steps: int,
                  batch: int = 8, lr: float = 5e-4, seed: int = 0, joint: bool = False,
                  lm_lr: float = 5e-5, audio_weight: float = 1.0, log_every: int = 50,
                  verbose: bool = True) -> List[float]:
    """Stage 2 (``joint=False``: LM frozen, Adam on the FaceLM) or stage 3 (``joint=True``: face
    CE + ``audio_weight`` x the LM's audio-token CE, Adam with the LM at ``lm_lr``). Trains in
    place; returns the face losses."""
    g = torch.Generator().manual_seed(seed)
    B = data["tokens"].shape[0]
    for p in lm.parameters():
        p.requires_grad_(joint)
    groups = [{"params": list(face_lm.parameters()), "lr": lr}]
    if joint:
        groups.append({"params": list(lm.parameters()), "lr": lm_lr})
    opt = torch.optim.Adam(groups)
    face_lm.train()
    lm.train(joint)
    hist = []
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(B, (min(batch, B),), generator=g)
        b = {k: data[k][idx] for k in ("tokens", "robot_face", "user_face")}
        if joint:
            lf, la = _joint_loss(lm, face_lm, b)
            loss = lf + audio_weight * la
        else:
            lf = loss = face_loss(lm, face_lm, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for grp in groups for p in grp["params"]], 1.0)
        opt.step()
        hist.append(float(lf.detach()))
        if verbose and (step % log_every == 0 or step == steps):
            print(f"  {'stage3' if joint else 'stage2'} step {step}/{steps} face CE "
                  f"{np.mean(hist[-log_every:]):.3f} ({time.time() - t0:.0f}s)", flush=True)
    for p in lm.parameters():
        p.requires_grad_(False)
    face_lm.eval()
    lm.eval()
    return hist


# ---- prediction and evaluation --------------------------------------------------------------

@torch.no_grad()
def _face_logits(lm, face_lm, tokens, prev, user):
    h, _, e_gen = _temporal_pass(lm, face_lm, tokens, prev, user)
    ft = face_lm.face_transformer
    return ft(h[:, :-1] + e_gen, prev[:, :-1] if ft.cfg.use_prev_tokens else None)


@torch.no_grad()
def predict_face_tokens(lm: LMModel, face_lm: FaceLM, data, teacher_forced: bool = True
                        ) -> torch.Tensor:
    """Greedy robot face tokens by time [B, N, S - 2] (times 0 .. S-3). Teacher-forced: the
    previous tokens are the ground truth; else the model's own (frame by frame; the causal LM
    recomputed over the prefix, the same computation as a streaming step)."""
    lm.eval()
    face_lm.eval()
    tokens = data["tokens"]
    user = data["user_face"].transpose(1, 2)
    robot = data["robot_face"].transpose(1, 2)
    B, S, N = robot.shape
    init = face_lm.cfg.initial_token
    if teacher_forced:
        prev = torch.cat([torch.full_like(robot[:, :1], init), robot[:, :-1]], 1)
        pred = _face_logits(lm, face_lm, tokens, prev, user).argmax(-1)  # [B, S-1, N]
    else:
        prev = torch.full_like(robot, init)
        pred = torch.zeros(B, S - 1, N, dtype=torch.long)
        for s in range(S - 1):
            lg = _face_logits(lm, face_lm, tokens[..., :s + 2], prev[:, :s + 2], user[:, :s + 2])
            pred[:, s] = lg[:, s].argmax(-1)
            prev[:, s + 1] = pred[:, s]
    return pred[:, 1:].transpose(1, 2)  # positions 1.. -> times 0..S-3


@torch.no_grad()
def decode_faces(codec: FaceCodec, tokens: torch.Tensor) -> np.ndarray:
    return codec.decode(tokens.long()).numpy()


def score(faces: np.ndarray, data) -> Dict[str, float]:
    """Decoded faces [B, T, 56] (the first T frames of each clip) vs ground truth and audio."""
    sync, me, le = [], [], []
    spf = SAMPLE_RATE // 25
    for b in range(faces.shape[0]):
        T = faces.shape[1]
        gt = data["face"][b][:T]
        audio = data["audio"][b][:T * spf]
        c, _ = metrics.lip_sync(audio, SAMPLE_RATE, faces[b][:, 50:53])
        sync.append(c)
        me.append(metrics.mean_error(faces[b], gt))
        le.append(metrics.lip_error(faces[b], gt))
    return {"sync": float(np.mean(sync)), "mean_err": float(np.mean(me)),
            "lip_err": float(np.mean(le))}


def evaluate(lm, face_lm, codec, data, free_running: bool = True) -> Dict[str, Dict[str, float]]:
    """{"tf": scores, "fr": scores} (fr only when ``free_running``)."""
    out = {"tf": score(decode_faces(codec, predict_face_tokens(lm, face_lm, data, True)), data)}
    if free_running:
        out["fr"] = score(decode_faces(codec, predict_face_tokens(lm, face_lm, data, False)), data)
    return out


def save_checkpoints(out_dir: Union[str, Path], face_lm: FaceLM, lm: Optional[LMModel] = None,
                     name: str = "face_lm", meta: Optional[dict] = None) -> None:
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_face_lm(face_lm, out / f"{name}.safetensors", meta)
    if lm is not None:
        with atomic_path(out / f"{name}_lm.safetensors") as tmp:
            save_file({k: v.detach().contiguous() for k, v in lm.state_dict().items()}, str(tmp),
                      metadata={"note": "tiny LM weights after joint training", **{k: json.dumps(v) for k, v in (meta or {}).items()}})


def make_lm(seed: int = 0) -> LMModel:
    """The tiny LM, random seeded weights (untrained; see the module doc)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LMModel(get_config("tiny"))
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm.eval()
