"""Face codec sweep: K in {128, 256} x C in {64, 128} (causal), plus the non-causal baseline at
K=256, C=128, trained on the same FLAME tracks for the same steps, evaluated on held-out tracks.

Prints the table next to Moshi-Face's (their MVE / LVE are mesh-vertex errors x1e-3 on real
data; ours are parameter-space errors on the given tracks, so only the trends compare) and the
causal / non-causal error ratio at K=256, C=128.

    python bench/face_codec_sweep.py --seconds 180 --steps 1500          # procedural motion
    python bench/face_codec_sweep.py --tracks a.npz b.npz --steps 20000  # FlameTrack / DualTalk npz
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facebot.model.face_codec import FaceCodecConfig  # noqa: E402
from facebot.train.codec_train import evaluate_codec, procedural_tracks, train_codec  # noqa: E402

PAPER = {(128, 64): (0.66, 11.20, 12.79), (128, 128): (0.67, 11.79, 13.95),
         (256, 64): (0.57, 9.85, 12.40), (256, 128): (0.66, 9.90, 11.77)}


def sweep(train_tracks, eval_tracks, steps: int, batch: int = 16, clip_frames: int = 64,
          lr: float = 1e-3, seed: int = 0, base: dict | None = None, verbose: bool = False,
          log_every: int = 0, eval_clip: int | None = None):
    """Train and evaluate every configuration; returns a list of result dicts."""
    runs = [(128, 64, True), (128, 128, True), (256, 64, True), (256, 128, True), (256, 128, False)]
    results = []
    for K, C, causal in runs:
        cfg = FaceCodecConfig(codebook_size=K, codebook_dim=C, causal=causal, **(base or {}))
        t0 = time.perf_counter()
        model, hist = train_codec(train_tracks, cfg, steps=steps, batch=batch,
                                  clip_frames=clip_frames, lr=lr, seed=seed,
                                  log_every=log_every, verbose=verbose)
        train_s = time.perf_counter() - t0
        m = evaluate_codec(model, eval_tracks, clip_frames=eval_clip or clip_frames)
        row = {"K": K, "C": C, "causal": causal, "train_s": train_s,
               "final_loss": float(np.mean([h["loss"] for h in hist[-50:]])), **m}
        if causal:
            row["stream"] = evaluate_codec(model, eval_tracks, clip_frames=None)
        results.append(row)
        print(f"  trained K={K} C={C} {'causal' if causal else 'non-causal'} in {train_s:.0f} s",
              file=sys.stderr, flush=True)
    return results


def print_table(results) -> None:
    print(f"{'K':>4} {'C':>4} {'codec':>10} | {'ppl':>5} {'mean L2':>8} {'lip err':>8} "
          f"{'mean L1':>8} | {'stream L2':>9} {'stream lip':>10} | paper ppl/MVE/LVE")
    for r in results:
        p = PAPER.get((r["K"], r["C"])) if r["causal"] else None
        s = r.get("stream")
        print(f"{r['K']:>4} {r['C']:>4} {'causal' if r['causal'] else 'non-causal':>10} | "
              f"{r['perplexity']:5.2f} {r['mean_l2']:8.4f} {r['lip_error']:8.4f} "
              f"{r['mean_l1']:8.5f} | "
              + (f"{s['mean_l2']:9.4f} {s['lip_error']:10.4f}" if s else f"{'-':>9} {'-':>10}")
              + " | " + (f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}" if p else "(non-causal: theirs)"))
    b = results[0]
    print(f"mean-face baseline: mean L2 {b['baseline_mean_l2']:.4f}, lip err {b['baseline_lip_error']:.4f}")
    c = next(r for r in results if r["K"] == 256 and r["C"] == 128 and r["causal"])
    n = next(r for r in results if r["K"] == 256 and r["C"] == 128 and not r["causal"])
    print(f"causal / non-causal at K=256, C=128: mean L2 {c['mean_l2'] / n['mean_l2']:.3f}, "
          f"lip {c['lip_error'] / n['lip_error']:.3f}, mean L1 {c['mean_l1'] / n['mean_l1']:.3f} "
          f"(done when <= 1.15)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", nargs="*", help="FLAME track .npz files (default: procedural motion)")
    ap.add_argument("--seconds", type=float, default=180.0, help="procedural training motion, s")
    ap.add_argument("--eval-seconds", type=float, default=60.0, help="procedural held-out motion, s")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--clip", type=int, default=64, help="training clip, 25 fps frames")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.tracks:
        from facebot.face.flame import FlameTrack
        tracks = [FlameTrack.load_npz(p).to_core() for p in a.tracks]
        n_eval = max(1, len(tracks) // 10)
        train, held = tracks[n_eval:], tracks[:n_eval]
    else:
        t0 = time.perf_counter()
        n = max(1, int(a.seconds // 60))
        train = procedural_tracks(a.seconds / n, n, seed=a.seed)
        held = procedural_tracks(a.eval_seconds, 1, seed=a.seed + 1000)
        print(f"procedural motion: {a.seconds:.0f} s train, {a.eval_seconds:.0f} s held out "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    res = sweep(train, held, a.steps, a.batch, a.clip, a.lr, a.seed, verbose=a.verbose,
                log_every=max(1, a.steps // 5) if a.verbose else 0)
    print(f"steps {a.steps}, batch {a.batch}, clip {a.clip} frames; errors on held-out motion "
          f"in FLAME parameter units, coded in clips of {a.clip} frames; 'stream' = whole "
          f"track streamed")
    print_table(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
