"""Moshi-Face system table at toy scale, end to end on the synthetic dyadic corpus.

Pipeline (see facebot/train/face_train.py for the layout and what the models are):
synthetic corpus -> face codec (train_codec on the train split's faces) -> tiny Mimi (random,
data-drawn codebooks, bins = LM card) -> tokens -> FaceLM stage 2 (tiny random LM frozen) ->
stage 3 (joint, LM lr 10x lower) -> evaluation on the test split.

Rows (paper Table: reconstructed face = upper bound, random face = lower bound, ours, ablations):

* reconstructed face: ground-truth robot face, face-codec encode -> decode;
* random face: another test clip's ground-truth face tokens (decoded; the next clip in the list,
  a different time window), i.e. a real face moving independently of this audio;
* ours: stage 2 (``--steps``) then stage 3 (``--joint-steps``);
* w/o stage-1 pre-training: the paper's "w/o Face Transformer pre-training": no frozen-LM stage,
  joint training from the start for the same total number of steps (steps + joint_steps);
* w/o full fine-tuning: stage 2 only (the paper's other ablation; free: ours before stage 3);
* w/o previous-frame face tokens: ``use_prev_tokens=False`` (Face Transformer queries get no
  t-1 token embedding), stages 2 + 3.

Columns: teacher-forced (ground-truth previous face tokens) and face free-running (own previous
tokens, ground-truth audio streams): lip-sync correlation of the robot's audio envelope with the
decoded jaw (higher = better, ground truth's own is printed too), parameter-space mean error and
lip error vs ground truth (lower = better).

    python bench/face_system_table.py --dialogues 10 --seconds 20 --steps 300
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facebot.train.system_table import format_table, run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=300, help="stage-2 steps")
    ap.add_argument("--joint-steps", type=int, default=None, help="stage-3 steps (default steps/2)")
    ap.add_argument("--codec-steps", type=int, default=300)
    ap.add_argument("--clip-s", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep corpus + checkpoints here")
    ap.add_argument("--no-free-running", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = run(a.dialogues, a.seconds, a.steps, a.joint_steps, a.codec_steps, a.clip_s, a.batch,
            a.seed, a.out, not a.no_free_running)
    print(format_table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
