"""Stage 1 of training: the face codec (FLAME motion -> face tokens), before the face transformer
and the joint fine-tuning stages.

``train_codec(tracks, cfg, steps, ...) -> (model, history)``

* Data: FLAME core tracks ``[T, 56]`` at 25 fps, given as an array, an array ``[M, T, 56]``, a
  :class:`~facebot.face.flame.FlameTrack`, a list of those, or any iterable of clips (it is
  read once into memory). Each step draws ``batch`` random crops of ``clip_frames`` frames
  (starts uniform over all valid positions of all tracks). Tracks shorter than a clip are
  skipped.
* Normalisation: per-dimension mean and std of the training frames, stored in the model's
  buffers (hence in every checkpoint); losses are in normalised units.
* Loss: L1 reconstruction + ``velocity_weight`` * L1 of frame-to-frame differences +
  ``commitment_weight`` * commitment; the codebook follows EMA k-means updates, and entries
  whose usage decays below ``cfg.dead_fraction`` of the uniform share are restarted from this
  batch's encoder outputs (``restart_every`` steps; 0 disables restarts).
* Optimiser: Adam (``lr``, optional gradient clipping).
* Checkpoints (``out_dir``): ``codec_last.safetensors`` every ``ckpt_every`` steps and at the
  end (written atomically) holding the model (``model.*``, incl. codebook EMA statistics and
  normalisation), Adam's moments and step counts (``optim.*``), the data / restart RNG state
  (``rng``) and, in the metadata, the config, the step and the training arguments;
  ``face_codec.safetensors`` (model only, :func:`facebot.model.face_codec.load_face_codec`).
  ``resume=True`` continues from ``codec_last.safetensors`` up to ``steps`` total and gives
  exactly the losses uninterrupted training would have given (same threads, same device).
* Logging: one JSON object per ``log_every`` steps appended to ``out_dir/metrics.jsonl``
  (step, loss terms, batch perplexity, restarts, learning rate, steps/s) and a one-line
  progress print (``verbose``). ``history`` (returned) holds every step's record.

``evaluate_codec(model, tracks, clip_frames=None)`` gives the codec metrics; see its docstring.
``procedural_tracks(seconds, ...)`` synthesises FLAME motion with the procedural face (the
stand-in corpus for tests and the sweep bench).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from facebot.io.atomic import atomic_path
from facebot.model.face_codec import (
    LIP_DIMS,
    FaceCodec,
    FaceCodecConfig,
    normalized_perplexity,
    save_face_codec,
)

__all__ = ["train_codec", "evaluate_codec", "as_tracks", "procedural_tracks", "CKPT_NAME",
           "MODEL_NAME", "LOG_NAME"]

CKPT_NAME = "codec_last.safetensors"
MODEL_NAME = "face_codec.safetensors"
LOG_NAME = "metrics.jsonl"
_FORMAT = "facebot-face-codec-train"


# ---- data -------------------------------------------------------------------------------------

def _one_track(t) -> List[np.ndarray]:
    if hasattr(t, "to_core"):  # FlameTrack
        t = t.to_core()
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    a = np.asarray(t, np.float32)
    if a.ndim == 3:
        return [x for x in a]
    if a.ndim != 2:
        raise ValueError(f"a FLAME track must be [T, D] (or [M, T, D]), got shape {list(a.shape)}")
    return [a]


def as_tracks(tracks) -> List[np.ndarray]:
    """Any accepted input (see the module docstring) -> list of float32 arrays [T, D]."""
    if isinstance(tracks, (np.ndarray, torch.Tensor)) or hasattr(tracks, "to_core"):
        out = _one_track(tracks)
    else:
        out = [a for t in tracks for a in _one_track(t)]
    if not out:
        raise ValueError("no FLAME tracks given")
    dims = {a.shape[1] for a in out}
    if len(dims) != 1:
        raise ValueError(f"FLAME tracks have different widths: {sorted(dims)}")
    for i, a in enumerate(out):
        if not np.isfinite(a).all():
            raise ValueError(f"FLAME track {i} has non-finite values")
    return out


class _Clips:
    """Random crops of ``clip`` frames from a list of tracks, drawn with a torch Generator."""

    def __init__(self, tracks: List[np.ndarray], clip: int):
        keep = [a for a in tracks if a.shape[0] >= clip]
        if not keep:
            raise ValueError(f"no track has the {clip} frames of a training clip "
                             f"(longest: {max(a.shape[0] for a in tracks)})")
        self.data = torch.from_numpy(np.concatenate(keep, 0))
        starts, off = [], 0
        for a in keep:
            starts.append(torch.arange(off, off + a.shape[0] - clip + 1))
            off += a.shape[0]
        self.starts = torch.cat(starts)
        self.clip = clip
        self._offs = torch.arange(clip)

    def sample(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        i = torch.randint(0, self.starts.numel(), (batch,), generator=gen)
        return self.data[self.starts[i][:, None] + self._offs]  # [B, clip, D]


# ---- checkpoints ------------------------------------------------------------------------------

def _save_checkpoint(path: Path, model: FaceCodec, opt: torch.optim.Optimizer,
                     gen: torch.Generator, step: int, train_args: dict) -> None:
    from safetensors.torch import save_file
    t = {"model." + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    for i, p in enumerate(params):
        st = opt.state.get(p)
        if not st:
            continue
        for name in ("exp_avg", "exp_avg_sq", "step"):
            v = st[name]
            v = v if torch.is_tensor(v) else torch.tensor(float(v))
            t[f"optim.{i}.{name}"] = v.detach().clone().cpu()
    t["rng"] = gen.get_state().clone()
    md = {"format": _FORMAT, "config": json.dumps(model.cfg.to_dict()), "step": str(step),
          "train": json.dumps(train_args)}
    with atomic_path(path) as tmp:
        save_file(t, str(tmp), metadata=md)


def _load_checkpoint(path: Path, model: FaceCodec, opt: torch.optim.Optimizer,
                     gen: torch.Generator) -> Tuple[int, dict]:
    from safetensors import safe_open
    from facebot.model.checkpoint import CheckpointError, load_state
    with safe_open(str(path), framework="pt", device="cpu") as f:
        md = f.metadata() or {}
        if md.get("format") != _FORMAT:
            raise CheckpointError(str(path), [], [], [], note=": not a face codec training checkpoint")
        saved_cfg = json.loads(md["config"])
        if saved_cfg != model.cfg.to_dict():
            diff = {k: (saved_cfg.get(k), v) for k, v in model.cfg.to_dict().items()
                    if saved_cfg.get(k) != v}
            raise ValueError(f"{path}: checkpoint config differs from the requested one "
                             f"(checkpoint, requested): {diff}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = list(model.parameters())
    for i, p in enumerate(params):
        if f"optim.{i}.exp_avg" in tensors:
            opt.state[p] = {n: tensors[f"optim.{i}.{n}"].clone().to(p.device) if n != "step"
                            else tensors[f"optim.{i}.step"].clone()
                            for n in ("exp_avg", "exp_avg_sq", "step")}
    gen.set_state(tensors["rng"])
    return int(md["step"]), json.loads(md.get("train", "{}"))


# ---- training ---------------------------------------------------------------------------------

def train_codec(tracks, cfg: Optional[FaceCodecConfig] = None, steps: int = 1000, batch: int = 16,
                clip_frames: int = 64, lr: float = 1e-3, seed: int = 0,
                out_dir: Union[str, Path, None] = None, resume: bool = False,
                log_every: int = 50, ckpt_every: int = 500, restart_every: int = 1,
                grad_clip: Optional[float] = 1.0, verbose: bool = True,
                model: Optional[FaceCodec] = None) -> Tuple[FaceCodec, List[dict]]:
    """Train the face codec for ``steps`` steps in total (see the module docstring).

    Returns ``(model, history)``: the model in eval mode and one dict per step run by this call
    (``step`` = 1-based global step, ``loss``, ``rec``, ``vel``, ``commit``, ``perplexity``
    (batch, mean over codebooks), ``restarted``).
    """
    cfg = cfg or (model.cfg if model is not None else FaceCodecConfig())
    if clip_frames % cfg.downsample:
        raise ValueError(f"clip_frames {clip_frames} must be a multiple of r = {cfg.downsample}")
    data = as_tracks(tracks)
    if data[0].shape[1] != cfg.input_dim:
        raise ValueError(f"tracks have {data[0].shape[1]} dims, the codec expects {cfg.input_dim}")
    clips = _Clips(data, clip_frames)

    gen = torch.Generator().manual_seed(seed)
    if model is None:
        with torch.random.fork_rng(devices=[]):  # seeded init, caller's global RNG untouched
            torch.manual_seed(seed)
            model = FaceCodec(cfg)
    allf = clips.data
    model.set_normalization(allf.mean(0), allf.std(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    train_args = {"batch": batch, "clip_frames": clip_frames, "lr": lr, "seed": seed,
                  "restart_every": restart_every, "grad_clip": grad_clip}

    start = 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ck = out / CKPT_NAME
        if resume and ck.exists():
            start, saved = _load_checkpoint(ck, model, opt, gen)
            changed = {k: (saved.get(k), v) for k, v in train_args.items() if saved.get(k) != v}
            if changed and verbose:
                print(f"[codec] resuming with changed training arguments (saved, now): {changed}",
                      file=sys.stderr)
            if verbose:
                print(f"[codec] resumed from {ck} at step {start}", file=sys.stderr)
    log = open(out / LOG_NAME, "a") if out is not None else None

    history: List[dict] = []
    model.train()
    t0 = time.perf_counter()
    last_t, last_step = t0, start
    acc: dict = {}
    try:
        for step in range(start + 1, steps + 1):
            x = clips.sample(batch, gen)
            res = model(x, update_codebook=True)
            opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            restarted = 0
            if restart_every and step % restart_every == 0:
                restarted = model.quantizer.restart_dead(res["latents"], generator=gen)
            rec = {"step": step, "loss": res["loss"].item(), "rec": res["rec"].item(),
                   "vel": res["vel"].item(), "commit": res["commit"].item(),
                   "perplexity": float(res["perplexity"].mean()), "restarted": restarted}
            history.append(rec)
            for k, v in rec.items():
                if k != "step":
                    acc[k] = acc.get(k, 0.0) + v
            if log_every and (step % log_every == 0 or step == steps):
                now = time.perf_counter()
                n = step - last_step
                entry = {"step": step, **{k: (v / n if k != "restarted" else int(v))
                                          for k, v in acc.items()},
                         "lr": opt.param_groups[0]["lr"], "steps_per_s": n / max(now - last_t, 1e-9),
                         "elapsed_s": now - t0}
                if log is not None:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                if verbose:
                    print(f"[codec] step {step}/{steps} loss {entry['loss']:.4f} "
                          f"(rec {entry['rec']:.4f} vel {entry['vel']:.4f} "
                          f"commit {entry['commit']:.4f}) ppl {entry['perplexity']:.3f} "
                          f"restarted {entry['restarted']} | {entry['steps_per_s']:.1f} steps/s",
                          flush=True)
                acc, last_t, last_step = {}, now, step
            if out is not None and ckpt_every and step % ckpt_every == 0 and step != steps:
                _save_checkpoint(out / CKPT_NAME, model, opt, gen, step, train_args)
        if out is not None:
            final = max(steps, start)
            _save_checkpoint(out / CKPT_NAME, model, opt, gen, final, train_args)
            save_face_codec(model, out / MODEL_NAME, {"step": str(final)})
    finally:
        if log is not None:
            log.close()
    model.eval()
    return model, history


# ---- evaluation -------------------------------------------------------------------------------

def _chunks(data: List[np.ndarray], clip: Optional[int], r: int) -> List[np.ndarray]:
    out = []
    for a in data:
        if clip is None:
            n = a.shape[0] - a.shape[0] % r
            if n:
                out.append(a[:n])
            continue
        for s in range(0, a.shape[0], clip):
            c = a[s:s + clip]
            c = c[:c.shape[0] - c.shape[0] % r]
            if c.shape[0]:
                out.append(c)
    return out


@torch.no_grad()
def evaluate_codec(model: FaceCodec, tracks, clip_frames: Optional[int] = None,
                   batch_size: int = 32) -> dict:
    """Reconstruction and codebook metrics on ``tracks`` (encode then decode; parameter space).

    ``clip_frames``: cut tracks into consecutive clips of this many frames (each coded from a
    fresh state, like the training clips); None codes every track whole (how the causal codec
    streams).

    Returns a dict:
      ``mean_l1``  mean |error| over frames and the 56 dims;
      ``mean_l2``  mean over frames of the error's Euclidean norm over the 56 dims (the
                   parameter-space analogue of the paper's MVE);
      ``lip_error`` mean over frames of the Euclidean error norm over ``LIP_DIMS`` (jaw pose +
                   expression 0..9; the analogue of LVE), ``lip_l1`` its mean |error|;
      ``baseline_mean_l2`` / ``baseline_lip_error``: the same for always predicting the
                   training mean (the identity-free baseline);
      ``perplexity`` normalised perplexity exp(H)/K, mean over codebooks, with
      ``perplexity_per_codebook`` and ``perplexity_per_position`` (each of the N token slots);
      ``frames`` evaluated.
    """
    model.eval()
    cfg = model.cfg
    clips = _chunks(as_tracks(tracks), clip_frames, cfg.downsample)
    if not clips:
        raise ValueError("nothing to evaluate")
    lip = list(LIP_DIMS)
    s_l1 = s_l2 = s_lip = s_lipl1 = b_l2 = b_lip = 0.0
    frames = 0
    toks = []
    dt = model.mean.dtype
    # group clips of equal length into batches
    by_len: dict = {}
    for c in clips:
        by_len.setdefault(c.shape[0], []).append(c)
    for L, group in by_len.items():
        for i in range(0, len(group), batch_size):
            x = torch.from_numpy(np.stack(group[i:i + batch_size])).to(dt)
            tok = model.encode(x)
            y = model.decode(tok)
            e = y - x
            eb = model.mean - x
            s_l1 += float(e.abs().sum()) / e.shape[-1]
            s_l2 += float(e.norm(dim=-1).sum())
            s_lip += float(e[..., lip].norm(dim=-1).sum())
            s_lipl1 += float(e[..., lip].abs().sum()) / len(lip)
            b_l2 += float(eb.norm(dim=-1).sum())
            b_lip += float(eb[..., lip].norm(dim=-1).sum())
            frames += x.shape[0] * x.shape[1]
            toks.append(tok.transpose(1, 2).reshape(-1, cfg.num_tokens))  # [B*T', N]
    tk = torch.cat(toks, 0)
    K = cfg.codebook_size
    per_pos = [normalized_perplexity(tk[:, n], K) for n in range(cfg.num_tokens)]
    per_cb = [normalized_perplexity(tk, K)] if cfg.shared_codebook else per_pos
    return {
        "mean_l1": s_l1 / frames, "mean_l2": s_l2 / frames,
        "lip_error": s_lip / frames, "lip_l1": s_lipl1 / frames,
        "baseline_mean_l2": b_l2 / frames, "baseline_lip_error": b_lip / frames,
        "perplexity": float(np.mean(per_cb)), "perplexity_per_codebook": per_cb,
        "perplexity_per_position": per_pos, "frames": frames,
    }


# ---- procedural stand-in corpus ---------------------------------------------------------------

_PHONEMES = ("a e i O u p b m f v s z S t d k g n l r w j aI eI oU @ I E V A: i: u: T D").split()


def procedural_tracks(seconds: float, n_tracks: int = 1, seed: int = 0) -> List[np.ndarray]:
    """``n_tracks`` FLAME core tracks ``[T, 56]`` of ``seconds`` each from the procedural face:
    a random conversation of robot turns (phoneme-timed speech, or audio-envelope-driven
    speech), user turns (listening with pauses, nods and backchannels) and silences.
    Deterministic for a seed. A stand-in until a real or generated corpus is used."""
    from facebot.audio.timing import PhonemeSpan
    from facebot.face.cues import FaceCue
    from facebot.face.procedural import ProceduralFace
    from facebot.config.face import ProceduralFaceConfig

    sr, n = 24_000, 1920
    out = []
    for k in range(n_tracks):
        rng = np.random.default_rng([seed, k])
        face = ProceduralFace(ProceduralFaceConfig(seed=int(rng.integers(1 << 30)),
                                                   lip_gain=float(rng.uniform(0.7, 1.2))))
        n_cues = int(round(seconds / 0.08))
        frames = []
        i = 0
        while i < n_cues:
            kind = rng.choice(["phonemes", "audio", "listen", "silence"], p=[0.35, 0.25, 0.3, 0.1])
            length = int(rng.integers(15, 60))  # 1.2 .. 4.8 s
            length = min(length, n_cues - i)
            phon = []
            if kind == "phonemes":
                t = 0.0
                while t < length * 0.08 + 0.5:
                    d = float(rng.uniform(0.05, 0.16))
                    p = "_" if rng.random() < 0.08 else str(rng.choice(_PHONEMES))
                    phon.append(PhonemeSpan(p, t, t + d))
                    t += d
            fm = float(rng.uniform(2.5, 6.0))
            amp = float(rng.uniform(0.05, 0.4))
            pauses = set(rng.integers(0, length, size=2).tolist())
            for j in range(length):
                audio = np.zeros(n, np.float32)
                ph = None
                if kind in ("phonemes", "audio"):
                    tt = (j * n + np.arange(n)) / sr
                    env = np.clip(np.sin(2 * np.pi * fm * tt), 0, None) ** 1.5
                    buzz = np.sin(2 * np.pi * 150 * tt) * (1 + 0.3 * rng.standard_normal(n))
                    audio = (amp * env * buzz).astype(np.float32)
                if kind == "phonemes":
                    t0 = j * 0.08
                    ph = [s.shifted(-t0) for s in phon if s.end_s > t0 - 0.2 and s.start_s < t0 + 0.48]
                cue = FaceCue(audio, ph, robot_speaking=kind in ("phonemes", "audio"),
                              user_speaking=kind == "listen",
                              user_speech_prob=0.9 if kind == "listen" else 0.0,
                              user_pause=kind == "listen" and j in pauses,
                              backchannel=kind == "listen" and j in pauses and rng.random() < 0.5)
                frames += face.step(cue)
            i += length
        out.append(np.stack([f.to_core() for f in frames]).astype(np.float32))
    return out
