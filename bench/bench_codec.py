"""Mimi codec per-frame streaming cost: ours (facebot.model.codec) vs Kyutai's moshi, same weights.

Builds moshi's Mimi with random weights (codebooks filled, see test/codec_reference.py),
imports the same weights into ours through the Kyutai key map, then streams a speech-like clip
frame by frame (1920 samples = 80 ms) through both, interleaved (ref encode, ours encode, ref
decode, ours decode per frame) so that machine load hits both alike. Prints per-frame encode and
decode times (median, p90) and ours/reference ratios, and checks on the way that the codes and
audio agree.

    python bench/bench_codec.py [--config mimi|tiny] [--frames 60] [--warmup 5] [--threads 1]

Target: ours <= 0.7x the reference's time (encode + decode).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the tests' codec oracle

import torch  # noqa: E402

from facebot.model.codec import MimiCodec, codec_config  # noqa: E402
from codec_reference import build_reference, speech_like  # noqa: E402


def _stats(ts):
    ts = sorted(ts)
    return statistics.median(ts) * 1e3, ts[int(0.9 * (len(ts) - 1))] * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="mimi", help="codec config: mimi (Kyutai's) or tiny")
    ap.add_argument("--frames", type=int, default=60, help="timed frames (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both implementations)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = codec_config(args.config)
    t0 = time.perf_counter()
    ref = build_reference(cfg, seed=args.seed)
    ours = MimiCodec(cfg).load_kyutai_state(ref.state_dict())
    print(f"config {args.config}: {sum(p.numel() for p in ref.parameters()) / 1e6:.1f} M "
          f"parameters (reference), {cfg.num_codebooks} codebooks; threads {args.threads}; "
          f"built in {time.perf_counter() - t0:.1f} s")

    n = args.warmup + args.frames
    fs = cfg.frame_size
    pcm = speech_like(n * fs, cfg.sample_rate, seed=args.seed + 7)
    times = {k: [] for k in ("ref_enc", "ours_enc", "ref_dec", "ours_dec")}
    match = total = 0
    max_diff = 0.0
    with torch.inference_mode(), ref.streaming(1):
        state = ours.init_state(1)
        for i in range(n):
            frame = pcm[..., i * fs:(i + 1) * fs]
            t = time.perf_counter()
            c_ref = ref.encode(frame)
            t_ref_enc = time.perf_counter() - t
            t = time.perf_counter()
            c_ours, state = ours.encode_step(frame, state)
            t_ours_enc = time.perf_counter() - t
            t = time.perf_counter()
            y_ref = ref.decode(c_ref)
            t_ref_dec = time.perf_counter() - t
            t = time.perf_counter()
            y_ours, state = ours.decode_step(c_ref, state)  # same codes into both decoders
            t_ours_dec = time.perf_counter() - t
            match += int((c_ref == c_ours).sum())
            total += c_ref.numel()
            max_diff = max(max_diff, float((y_ref - y_ours).abs().max()))
            if i >= args.warmup:
                for k, v in zip(times, (t_ref_enc, t_ours_enc, t_ref_dec, t_ours_dec)):
                    v_list = times[k]
                    v_list.append(v)

    print(f"parity over {n} frames: codes {100.0 * match / total:.2f}% identical, "
          f"decode max |diff| {max_diff:.2e}")
    print(f"{'per frame (ms)':<16}{'reference':>12}{'ours':>12}{'ratio':>9}   (median; p90)")
    rows = [("encode", "ref_enc", "ours_enc"), ("decode", "ref_dec", "ours_dec")]
    for name, kr, ko in rows:
        (mr, pr), (mo, po) = _stats(times[kr]), _stats(times[ko])
        print(f"{name:<16}{mr:>7.2f};{pr:>5.1f}{mo:>7.2f};{po:>5.1f}{mo / mr:>8.2f}x")
    tr = [a + b for a, b in zip(times["ref_enc"], times["ref_dec"])]
    to = [a + b for a, b in zip(times["ours_enc"], times["ours_dec"])]
    (mr, pr), (mo, po) = _stats(tr), _stats(to)
    ratio = mo / mr
    print(f"{'encode+decode':<16}{mr:>7.2f};{pr:>5.1f}{mo:>7.2f};{po:>5.1f}{ratio:>8.2f}x")
    budget = 1e3 / cfg.frame_rate
    print(f"ratio ours/reference: {ratio:.2f}x (target <= 0.70x); real-time budget "
          f"{budget:.0f} ms/frame: ours {mo / budget:.2f}, reference {mr / budget:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
