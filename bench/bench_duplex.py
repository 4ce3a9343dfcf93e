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
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("NO_CUDA_GRAPH", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the tests' codec oracle

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
    ap.add_argument("--variants", default="fp32,int8,ort-fp32",
                    help="ours: torch LM weight modes fp32, bf16, int8; exported graphs ort-fp32, ort-fp16, "
                         "ort-int8, ort-int4 (onnxruntime CPU), trt-fp32, trt-fp16 (TensorRT, where a GPU "
                         "and TensorRT exist)")
    ap.add_argument("--split", action="store_true",
                    help="also print each graph's time per frame for the exported variants, and the depth "
                         "step as it was before (the substep graph that gathers its weights by k, x dep_q)")
    ap.add_argument("--no-face", action="store_true",
                    help="ours without the face path (default: ours also runs the Face Transformer and "
                         "face decoder every frame; the reference has no face)")
    ap.add_argument("--export-dir", default=None, help="reuse/keep the exported graphs here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from moshi.models.lm import LMGen as RefGen
    from moshi.models.lm import LMModel as RefLM

    from facebot.model.codec import MimiCodec, codec_config
    from codec_reference import build_reference, speech_like
    from facebot.model.configs import load_config
    from facebot.model.lm import LMModel, load_lm_checkpoint
    from facebot.model.sampling import SamplingConfig, make_generator
    from facebot.runtime.face_lm_step import FaceLMStep
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

    runners, splits = {}, {}
    ctx = [ref_mimi.streaming(1), ref_gen.streaming(1)]
    for c in ctx:
        c.__enter__()

    def reference(t):
        codes = ref_mimi.encode(pcm[t])
        out = ref_gen.step(codes)
        if out is not None:
            ref_mimi.decode(out[:, 1:])

    runners["reference (moshi)"] = reference
    face = None if args.no_face else make_face(cfg, args.seed)
    tag = "" if face is None else "+face"
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        lm = LMModel(cfg).eval()
        load_lm_checkpoint(lm, sd)
        if variant.startswith(("ort-", "trt-")):
            run = graph_runner(variant, ours_mimi, lm, sampling, face, pcm, args)
            if run is not None:
                runners[f"ours {variant}{tag}"] = run
                splits[f"ours {variant}{tag}"] = run.split
            continue
        stepper = LMStep(lm, sampling, weights={"fp32": "none", "bf16": "bf16", "int8": "int8"}[variant])
        fstep = FaceLMStep(stepper, *face) if face is not None else None
        state = {"enc": ours_mimi.init_encoder_state(1), "dec": ours_mimi.init_decoder_state(1),
                 "lm": (fstep or stepper).init_state(1), "gen": make_generator(args.seed)}

        def ours(t, stepper=stepper, fstep=fstep, state=state):
            codes, state["enc"] = ours_mimi.encode_step(pcm[t], state["enc"])
            if fstep is not None:
                noise = fstep.draw_noise(1, state["gen"])
                tokens, valid, _, _, state["lm"] = fstep.step(codes[:, :, 0], None, state["lm"], noise)
            else:
                noise = stepper.draw_noise(1, state["gen"])
                tokens, valid, state["lm"] = stepper.step(codes[:, :, 0], state["lm"], None, noise)
            if bool(valid):
                _, state["dec"] = ours_mimi.decode_step(tokens[:, 1:].unsqueeze(-1), state["dec"])

        runners[f"ours torch-{variant}{tag}"] = ours

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

    print(f"duplex step (Mimi encode + LM step [+ face path] + Mimi decode), config {args.config!r}, "
          f"{args.frames} frames, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'implementation':<28}{'p50 ms':>9}{'p99 ms':>9}{'p50 ratio':>11}{'p99 ratio':>11}   vs the 80 ms budget")
    ref = times["reference (moshi)"]
    ref_p50, ref_p99 = pct(ref, 50), pct(ref, 99)
    for name, ts in times.items():
        p50, p99 = pct(ts, 50), pct(ts, 99)
        verdict = "real time" if p99 < BUDGET_MS else ("p50 in budget, p99 over" if p50 < BUDGET_MS else "over budget")
        print(f"{name:<28}{p50:>9.1f}{p99:>9.1f}{p50 / ref_p50:>10.2f}x{p99 / ref_p99:>10.2f}x   {verdict}")
    if args.split and splits:
        print_split(splits, args.warmup)
    return 0


def print_split(splits, warmup):
    """p50 ms per frame of each graph (all its runs in a frame together)."""
    graphs = []
    for sp in splits.values():
        graphs += [g for g in sp if g not in graphs]
    print("per graph, p50 ms per frame (host work between the graphs not included):")
    width = {g: max(12, len(g) + 2) for g in graphs}
    print(f"{'implementation':<28}" + "".join(f"{g:>{width[g]}}" for g in graphs))
    for name, sp in splits.items():
        cells = [f"{pct(sp[g][warmup:], 50):>{width[g]}.2f}" if sp.get(g) else f"{'-':>{width[g]}}" for g in graphs]
        print(f"{name:<28}" + "".join(cells))


def make_face(cfg, seed):
    """A Moshi-Face head with random weights at the default sizes (FaceLM + causal face codec)."""
    from facebot.model.face_codec import FaceCodec, FaceCodecConfig
    from facebot.model.face_transformer import FaceLM, FaceTransformerConfig

    torch.manual_seed(seed + 11)
    return (FaceLM(FaceTransformerConfig(dim_in=cfg.dim), zero_init_streams=False).eval(),
            FaceCodec(FaceCodecConfig()).eval())


def graph_runner(variant, codec, lm, sampling, face, pcm, args):
    """The exported graphs on onnxruntime (CPU) or TensorRT: export (or reuse) and load; None
    with a printed reason where the runtime is missing."""
    import tempfile

    from facebot.export.model_export import ensure_export
    from facebot.runtime.graph_loop import GraphDuplexStep

    kind, precision = variant.split("-", 1)
    folder = Path(args.export_dir or tempfile.mkdtemp(prefix="facebot-bench-")) / precision
    if kind == "trt":
        from facebot.runtime.tensorrt_runtime import tensorrt_available
        ok, why = tensorrt_available()
        if not ok:
            print(f"skipping {variant}: {why}")
            return None
    folder, manifest = ensure_export(folder, codec, lm, sampling, precision, *(face or (None, None)),
                                     log=lambda m: print(m, file=sys.stderr))
    if kind == "ort":
        from facebot.runtime.model_runtime import load_ort_runners
        runners = load_ort_runners(folder, manifest, "cpu", args.threads)
    else:
        from facebot.runtime.engine_cache import EngineCache
        from facebot.runtime.tensorrt_runtime import load_trt_runners
        runners = load_trt_runners(folder, manifest, EngineCache(folder / "engines"), precision=precision)
    loop = GraphDuplexStep(runners, lm.cfg, sampling)
    loop.reset(args.seed)
    frames = pcm.reshape(pcm.shape[0], -1).numpy()
    split = {name: [] for name in runners}
    if args.split:
        for name, r in runners.items():
            r.run = timed(r.run, split[name])
        if kind == "ort":
            split["depth (before: substep x8)"] = []
            substep = substep_depth(folder, lm, sampling, precision, args.threads)

    def run(t):
        if args.split:
            for times in split.values():
                times.append(0.0)
        loop.step(frames[t])
        if args.split and kind == "ort":  # the old depth step on this frame's h, outside the loop's time
            t0 = time.perf_counter()
            substep(runners["temporal"].data_out["h"], runners["temporal"].data_out["text"])
            split["depth (before: substep x8)"][-1] = (time.perf_counter() - t0) * 1000.0

    run.split = split
    return run


def timed(fn, times):
    """``fn`` that adds its time (ms) to the current frame's entry of ``times``."""
    def wrapper(**kw):
        t0 = time.perf_counter()
        out = fn(**kw)
        times[-1] += (time.perf_counter() - t0) * 1000.0
        return out
    return wrapper


def substep_depth(folder, lm, sampling, precision, threads):
    """The depth step as exported before: one substep graph run dep_q times, gathering each
    substep's weights by k (exported here at the same precision)."""
    from facebot.export.graphs import DepthSubstepGraph
    from facebot.export.onnx_export import export_graph
    from facebot.runtime.graph_runner import GraphSpec, OrtGraphRunner

    path = Path(folder) / "depth_substep.onnx"
    entry = export_graph(DepthSubstepGraph(lm, sampling.top_k), path, precision)
    runner = OrtGraphRunner(GraphSpec.from_folder(folder, "depth_substep", entry), path, threads=threads)
    noise, temp = torch.ones(1, entry["top_k"]), torch.ones(1)

    def run(h, text):
        prev = text
        for k in range(lm.cfg.dep_q):
            prev = runner.run(h=h, prev=prev, k=torch.tensor([k]), audio_noise=noise, audio_temp=temp)["token"].clone()
    return run


if __name__ == "__main__":
    sys.exit(main())
