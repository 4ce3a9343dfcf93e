"""The Moshi-Face system table on a corpus: face codec, stages 2 and 3, every row and mode.

Rows: reconstructed face (face codec encode -> decode of the ground truth: the upper bound),
random face (another test clip's real face: a face moving independently of this audio, the
lower bound), ours (stage 2 with the LM frozen, then stage 3 jointly, LM learning rate 10x
lower), w/o stage-1 pre-training (the paper's "w/o Face Transformer pre-training": joint from
the start for the same number of steps), w/o full fine-tuning (stage 2 only), w/o
previous-frame face tokens. Columns: teacher-forced and face free-running (own previous face
tokens, recorded audio streams): lip-sync correlation of the robot's audio with the decoded
jaw, parameter-space mean and lip error. The LM and Mimi are the tiny configs with seeded
random weights (see face_train.py): this measures the face path, not a trained speech model.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facebot.model.face_codec import FaceCodecConfig, save_face_codec
from facebot.model.face_transformer import FaceLM, FaceTransformerConfig
from facebot.train import face_train as ft
from facebot.train import metrics
from facebot.train.codec_train import train_codec
from facebot.train.corpus import make_corpus
from facebot.train.datasets import DyadicDataset

ROWS = ["reconstructed face", "random face", "ours", "w/o stage-1 pre-training",
        "w/o full fine-tuning", "w/o previous-frame face tokens"]


def run(dialogues: int = 10, seconds: float = 20.0, steps: int = 300, joint_steps=None,
        codec_steps: int = 300, clip_s: float = 4.0, batch: int = 8, seed: int = 0,
        out_dir=None, free_running: bool = True, verbose: bool = True) -> dict:
    joint_steps = steps // 2 if joint_steps is None else joint_steps
    t0 = time.time()
    log = print if verbose else (lambda *a, **k: None)
    tmp = tempfile.TemporaryDirectory() if out_dir is None else None
    out = Path(out_dir) if out_dir is not None else Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    root = out / "corpus"
    if not (root / "manifest.json").exists():
        make_corpus(root, dialogues, seconds, seed=seed)
    man = json.loads((root / "manifest.json").read_text())
    if not man["splits"].get("test"):
        raise SystemExit("the corpus has no test dialogues: use more --dialogues")
    log(f"corpus: {len(man['splits']['train'])} train / {len(man['splits']['test'])} test dialogues "
        f"({time.time() - t0:.0f}s)")

    lm = ft.make_lm(seed)
    N, K = 4, 64
    ccfg = FaceCodecConfig(hidden=64, codebook_size=K, codebook_dim=32, num_tokens=N,
                           dim_feedforward=128)
    train_ds = DyadicDataset(root, "train", clip_s=clip_s)
    tracks = [it["face_self"] for it in train_ds]
    codec, _ = train_codec(tracks, ccfg, steps=codec_steps, batch=16, clip_frames=32, seed=seed,
                           verbose=False)
    save_face_codec(codec, out / "face_codec.safetensors")
    log(f"face codec: {codec_steps} steps ({time.time() - t0:.0f}s)")

    mimi = ft.make_mimi(lm.cfg.card, seed)
    ft.fit_random_codebooks(mimi, [it["audio_self"] for it in list(train_ds)[:16]], seed)
    train = ft.prepare_split(root, "train", mimi, codec, lm.cfg, clip_s)
    test = ft.prepare_split(root, "test", mimi, codec, lm.cfg, clip_s)
    S = train["tokens"].shape[-1]
    log(f"data: {train['tokens'].shape[0]} train / {test['tokens'].shape[0]} test clips of "
        f"{S} frames ({time.time() - t0:.0f}s)")

    def fcfg(prev=True):
        return FaceTransformerConfig(dim_in=lm.cfg.dim, dim=64, num_layers=2, num_heads=4,
                                     num_tokens=N, codebook_size=K, use_prev_tokens=prev)

    def new_face_lm(prev=True):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            return FaceLM(fcfg(prev))

    res = {}
    # bounds
    T2 = S - 2
    rec = ft.decode_faces(codec, test["robot_face_time"][..., :T2])
    s = ft.score(rec, test)
    res["reconstructed face"] = {"tf": s, "fr": s}
    Bt = test["tokens"].shape[0]
    perm = np.roll(np.arange(Bt), 1)  # the next clip: another time window (never the partner's
    # face of the same window, which anti-correlates with this audio: turn-taking)
    rnd = ft.decode_faces(codec, test["robot_face_time"][perm][..., :T2])
    s = ft.score(rnd, test)
    res["random face"] = {"tf": s, "fr": s}

    # ours (+ w/o full fine-tuning = ours after stage 2)
    f = new_face_lm()
    ft.train_face_lm(lm, f, train, steps, batch, seed=seed, verbose=verbose)
    ft.save_checkpoints(out / "ckpt", f, None, "stage2")
    res["w/o full fine-tuning"] = ft.evaluate(lm, f, codec, test, free_running)
    ft.train_face_lm(lm, f, train, joint_steps, batch, seed=seed + 1, joint=True, verbose=verbose)
    ft.save_checkpoints(out / "ckpt", f, lm, "stage3")
    res["ours"] = ft.evaluate(lm, f, codec, test, free_running)
    log(f"ours trained + evaluated ({time.time() - t0:.0f}s)")

    # w/o stage-1 (Face Transformer) pre-training: joint from the start
    lm2 = ft.make_lm(seed)
    f = new_face_lm()
    ft.train_face_lm(lm2, f, train, steps + joint_steps, batch, seed=seed, joint=True,
                     verbose=verbose)
    res["w/o stage-1 pre-training"] = ft.evaluate(lm2, f, codec, test, free_running)

    # w/o previous-frame face tokens
    lm3 = ft.make_lm(seed)
    f = new_face_lm(prev=False)
    ft.train_face_lm(lm3, f, train, steps, batch, seed=seed, verbose=verbose)
    ft.train_face_lm(lm3, f, train, joint_steps, batch, seed=seed + 1, joint=True, verbose=verbose)
    res["w/o previous-frame face tokens"] = ft.evaluate(lm3, f, codec, test, free_running)

    gt_sync = float(np.mean([metrics.lip_sync(test["audio"][b][:T2 * 2 * 960], ft.SAMPLE_RATE,
                                              test["face"][b][:T2 * 2, 50:53])[0]
                             for b in range(Bt)]))
    if tmp is not None:
        tmp.cleanup()
    return {"rows": {r: res[r] for r in ROWS}, "gt_sync": gt_sync, "seconds": time.time() - t0,
            "train_clips": int(train["tokens"].shape[0]), "test_clips": Bt, "frames": S}


def format_table(r: dict) -> str:
    lines = [f"{'':32s} | {'teacher-forced':^26s} | {'face free-running':^26s}",
             f"{'model':32s} | {'sync^':>7s} {'mean_e':>8s} {'lip_e':>8s} | "
             f"{'sync^':>7s} {'mean_e':>8s} {'lip_e':>8s}"]
    lines.append("-" * len(lines[1]))
    for name, v in r["rows"].items():
        cells = []
        for mode in ("tf", "fr"):
            s = v.get(mode)
            cells.append("      --       --       --" if s is None else
                         f"{s['sync']:7.3f} {s['mean_err']:8.3f} {s['lip_err']:8.3f}")
        lines.append(f"{name:32s} | {cells[0]} | {cells[1]}")
    lines.append(f"ground-truth face lip sync: {r['gt_sync']:.3f}; {r['train_clips']} train / "
                 f"{r['test_clips']} test clips of {r['frames']} frames; {r['seconds']:.0f} s")
    return "\n".join(lines)


