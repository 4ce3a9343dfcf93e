"""The whole duplex step (codec encode + LM step + codec decode, one 80 ms frame): ours vs the
reference moshi package, side by side in one run, same config and the same random weights.

The reference is moshi 0.2.13: ``MimiModel.encode`` -> ``LMGen.step`` -> ``MimiModel.decode`` in
streaming mode. Ours is the `model` speech backend's step (facebot/pipeline/model_backend.py:
``MimiCodec.encode_step`` -> ``LMStep.step`` -> ``MimiCodec.decode_step``), with the LM weights
as they are (fp32: token-exact with moshi) or as weight-only int8 copies. Input: a speech-like
signal. Frames alternate between the implementations so machine load hits both alike.

    NO_TORCH_COMPILE=1 python bench/bench_duplex.py --config small --frames 100
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("NO_CUDA_GRAPH", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BUDGET_MS = 80.0


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", help="LM config (tiny, small, moshi-7b, config.json)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="fp32,int8", help="our LM weight modes: fp32, bf16, int8")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from moshi.models.lm import LMGen as RefGen
    from moshi.models.lm import LMModel as RefLM

    from facebot.model.codec import MimiCodec, codec_config
    from facebot.model.codec_reference import build_reference, speech_like
    from facebot.model.configs import load_config
    from facebot.model.lm import LMModel, load_lm_checkpoint
    from facebot.model.sampling import SamplingConfig, make_generator
    from facebot.runtime.lm_step import LMStep

    cfg = load_config(args.config)
    codec_cfg = codec_config("mimi" if cfg.card == 2048 else "tiny")
    ref_mimi = build_reference(codec_cfg, seed=args.seed)
    ours_mimi = MimiCodec(codec_cfg).eval()
    ours_mimi.load_kyutai_state(ref_mimi.state_dict(), source="reference Mimi")
    torch.manual_seed(args.seed)
    ref_lm = RefLM(**cfg.moshi_kwargs(), device="cpu", dtype=torch.float32).eval()
    sd = ref_lm.state_dict()
    sampling = SamplingConfig()
    ref_gen = RefGen(ref_lm, use_sampling=True, temp=sampling.temp, temp_text=sampling.temp_text,
                     top_k=sampling.top_k, top_k_text=sampling.top_k_text)
    total = args.warmup + args.frames
    pcm = speech_like(total * 1920, 24000, seed=args.seed + 7).view(total, 1, 1, 1920)

    runners = {}
    ctx = [ref_mimi.streaming(1), ref_gen.streaming(1)]
    for c in ctx:
        c.__enter__()

    def reference(t):
        codes = ref_mimi.encode(pcm[t])
        out = ref_gen.step(codes)
        if out is not None:
            ref_mimi.decode(out[:, 1:])

    runners["reference (moshi)"] = reference
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        lm = LMModel(cfg).eval()
        load_lm_checkpoint(lm, sd)
        stepper = LMStep(lm, sampling, weights={"fp32": "none", "bf16": "bf16", "int8": "int8"}[variant])
        state = {"enc": ours_mimi.init_encoder_state(1), "dec": ours_mimi.init_decoder_state(1),
                 "lm": stepper.init_state(1), "gen": make_generator(args.seed)}

        def ours(t, stepper=stepper, state=state):
            codes, state["enc"] = ours_mimi.encode_step(pcm[t], state["enc"])
            noise = stepper.draw_noise(1, state["gen"])
            tokens, valid, state["lm"] = stepper.step(codes[:, :, 0], state["lm"], None, noise)
            if bool(valid):
                _, state["dec"] = ours_mimi.decode_step(tokens[:, 1:].unsqueeze(-1), state["dec"])

        runners[f"ours lm-{variant}"] = ours

    times = {name: [] for name in runners}
    with torch.inference_mode():
        for t in range(total):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run(t)
                if t >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000.0)
    for c in reversed(ctx):
        c.__exit__(None, None, None)

    print(f"duplex step (Mimi encode + LM step + Mimi decode), config {args.config!r}, {args.frames} frames, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print(f"{'implementation':<22}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}   vs the 80 ms budget")
    ref_p50 = statistics.median(times["reference (moshi)"])
    for name, ts in times.items():
        p50, p99 = pct(ts, 50), pct(ts, 99)
        verdict = "real time" if p99 < BUDGET_MS else ("p50 in budget, p99 over" if p50 < BUDGET_MS else "over budget")
        print(f"{name:<22}{p50:>9.1f}{p99:>9.1f}{p50 / ref_p50:>7.2f}x   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
