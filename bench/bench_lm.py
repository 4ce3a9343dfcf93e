"""LM step (temporal + depth transformer, one 80 ms frame) : ours vs the reference moshi package,
side by side in one process, same config, same random weights, same thread count.

The reference is moshi 0.2.13's ``LMGen.step`` on an ``LMModel`` built from the same config
(``LMConfig.moshi_kwargs()``), random weights initialised by moshi and copied into ours through
our safetensors importer. Both sample with LMGen's defaults (temperature 0.8 / 0.7, top-k 250 /
25) unless ``--greedy``; ours is timed through ``facebot.runtime.lm_step.LMGen.step`` (noise
drawing included). Variants are timed in interleaved blocks so that machine noise hits all
alike; steps are timed one by one after a warm-up; median and p99 are printed with the ratio
ours / reference. Attention always spans the full KV capacity in both (static shapes), so the
cost per step does not depend on how long the session has run.

Our variants (``--variants``, comma-separated):
  eager-fp32      the pure step in eager PyTorch, fp32 weights (bit-exact with the reference)
  eager-bf16      matmul weights in bf16 (activations, norms, KV cache fp32)
  eager-int8      matmul weights int8, one scale per output channel (weight-only)
  compiled-fp32   torch.compile (inductor, CPU) of the whole step, fp32 weights
  compiled-int8   same, int8 weights
Compiled variants take about a minute to compile each on 2 cores (not counted in the timings).

    NO_TORCH_COMPILE=1 python bench/bench_lm.py [--config small] [--steps 100] [--threads 1]
        [--variants eager-fp32,eager-int8,compiled-int8] [--greedy]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # the reference's own lazy compile (CPU: ~20 s)
os.environ.setdefault("NO_CUDA_GRAPH", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _pct(ts, q):
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(round(q * (len(ts) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--block", type=int, default=10, help="steps per interleaved block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="eager-fp32,eager-int8,compiled-int8")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from moshi.models.lm import LMGen as RefGen
    from moshi.models.lm import LMModel as RefLM

    from facebot.model.configs import load_config
    from facebot.model.lm import LMModel, load_lm_checkpoint
    from facebot.model.sampling import SamplingConfig
    from facebot.runtime.lm_step import LMGen

    cfg = load_config(args.config)
    torch.manual_seed(args.seed)
    ref = RefLM(**cfg.moshi_kwargs(), device="cpu", dtype=torch.float32).eval()
    sd = ref.state_dict()
    n_params = sum(p.numel() for p in ref.parameters())
    sampling = SamplingConfig(use_sampling=not args.greedy)
    ref_gen = RefGen(ref, use_sampling=sampling.use_sampling, temp=sampling.temp,
                     temp_text=sampling.temp_text, top_k=sampling.top_k,
                     top_k_text=sampling.top_k_text)

    n_user = cfg.n_q - cfg.dep_q
    g = torch.Generator().manual_seed(args.seed + 1)
    total = args.warmup + args.steps
    codes = torch.randint(0, cfg.card, (total, 1, n_user, 1), generator=g)

    runners = {}  # name -> callable(step index)
    with torch.no_grad():
        ref_ctx = ref_gen.streaming(1)
        ref_ctx.__enter__()
    runners["reference (moshi)"] = lambda t: ref_gen.step(codes[t])

    for var in [v.strip() for v in args.variants.split(",") if v.strip()]:
        kind, _, wmode = var.partition("-")
        weights = {"fp32": "none", "bf16": "bf16", "int8": "int8"}[wmode]
        ours = LMModel(cfg).eval()
        load_lm_checkpoint(ours, sd)
        gen = LMGen(ours, SamplingConfig(**{**sampling.__dict__, "seed": args.seed + 2}),
                    weights=weights, compile=kind == "compiled")
        if kind == "compiled":
            t0 = time.perf_counter()
            gen.step(codes[0])
            print(f"{var}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
            gen.reset()
        runners[f"ours {var}"] = lambda t, gen=gen: gen.step(codes[t])

    times = {k: [] for k in runners}
    with torch.inference_mode():
        for t in range(args.warmup):
            for fn in runners.values():
                fn(t)
        t = args.warmup
        while t < total:
            n = min(args.block, total - t)
            for name, fn in runners.items():
                for i in range(n):
                    t0 = time.perf_counter()
                    fn(t + i)
                    times[name].append(time.perf_counter() - t0)
            t += n

    print(f"LM step, config {args.config!r} (dim {cfg.dim}, {cfg.num_layers} layers, depformer "
          f"{cfg.depformer_num_layers or cfg.num_layers}x{cfg.depformer_dim}, context "
          f"{cfg.context}, text_card {cfg.text_card}, card {cfg.card}; {n_params / 1e6:.1f} M "
          f"params), {args.steps} steps after {args.warmup} warm-up, {args.threads} thread(s), "
          f"{'greedy' if args.greedy else 'sampling'}, torch {torch.__version__}")
    ref_med = statistics.median(times["reference (moshi)"])
    print(f"{'':26s} {'median ms':>10s} {'p99 ms':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:26s} {med * 1e3:10.2f} {_pct(ts, 0.99) * 1e3:8.2f} {med / ref_med:7.2f}x")
    ref_ctx.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
