"""Token agreement and weight bytes of the exported graphs per precision (and int4 block size),
against the fp32 graphs, over the same streamed frames (greedy).

One fp32 export of the model (random weights, the face path included); the other precisions
are derived from it (:func:`facebot.export.onnx_export.derive_export`: the same conversion an
export applies, without tracing again). The fp32 graphs stream speech-like frames through
onnxruntime and every graph's inputs are recorded; each variant's graphs then run on those
inputs (teacher-forced: a free-running stream diverges at the first differing token and
compares diverged streams after that; with random weights the logits are nearly flat, so the
first flip comes within a few frames even at fp16). A token agrees when it equals fp32's at the
same frame and position: text (temporal graph), the 8 audio codebooks (depth graph, on the
variant's own h and text), Mimi's codes (encoder) and the face tokens (face_head). Bytes are
what the graph files store and what a frame reads (all but the embedding tables); "graphs ms"
is the p50 of a frame's graph calls (no host work).

    python bench/bench_precision.py --config small --frames 50 --variants fp16,int8,int4-32,int4-64,int4-128
    python bench/bench_precision.py --fp32-dir graphs/bench/fp32   # reuse an fp32 export
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def record_fp32(folder, manifest, cfg, sampling, pcms, threads):
    """Stream the frames through the fp32 graphs; per frame, every graph's data inputs and
    outputs (copies), and the step times."""
    from facebot.runtime.graph_loop import GraphDuplexStep
    from facebot.runtime.model_runtime import load_ort_runners

    runners = load_ort_runners(folder, manifest, "cpu", threads)
    frames = []

    def recording(name, fn):
        def run(**kw):
            out = fn(**kw)
            frames[-1][name] = ({k: v.clone() for k, v in kw.items()}, {k: v.clone() for k, v in out.items()})
            return out
        return run

    for name, r in runners.items():
        r.run = recording(name, r.run)
    loop = GraphDuplexStep(runners, cfg, sampling)
    loop.reset(0)
    for pcm in pcms:
        frames.append({})
        loop.step(pcm)
    return frames


def replay(folder, manifest, frames, threads):
    """The variant's graphs on the fp32 run's inputs, frame by frame (teacher-forced: each graph
    sees what fp32's saw, except that depth and face_head read the variant's own temporal output
    h and text token). Returns per frame the variant's tokens and the graphs' time (ms)."""
    from facebot.runtime.model_runtime import load_ort_runners

    runners = load_ort_runners(folder, manifest, "cpu", threads)
    out, times = [], []
    for rec in frames:
        t0 = time.perf_counter()
        got = {}
        for name in ("encoder", "face_embed", "temporal", "depth", "face_head", "decoder"):
            if name not in rec:
                continue
            kw = dict(rec[name][0])
            if name in ("depth", "face_head"):
                kw["h"] = got["temporal"]["h"]
            if name == "depth":
                kw["text"] = got["temporal"]["text"]
            got[name] = {k: v.clone() for k, v in runners[name].run(**kw).items()}
        times.append((time.perf_counter() - t0) * 1000.0)
        out.append(got)
    return out, times


def agreement(frames, got, graph, key):
    """Fraction of equal entries of output ``key`` of ``graph`` (None when it never ran)."""
    pairs = [(rec[graph][1][key], g[graph][key]) for rec, g in zip(frames, got) if graph in rec]
    if not pairs:
        return None
    eq = sum(int((a == b).sum()) for a, b in pairs)
    return eq / sum(a.numel() for a, _ in pairs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="fp16,int8,int4-32,int4-64,int4-128",
                    help="precisions to compare with fp32; int4-B / int8-B: block size B")
    ap.add_argument("--export-dir", default=None, help="keep the exports here (default: a temp dir)")
    ap.add_argument("--fp32-dir", default=None,
                    help="start from this fp32 export (e.g. bench_duplex's --export-dir DIR/fp32) "
                         "instead of exporting")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from facebot.export.onnx_export import derive_export, read_manifest
    from facebot.export.verify import speechlike_signal
    from facebot.model.configs import LMConfig
    from facebot.model.sampling import SamplingConfig

    sampling = SamplingConfig.greedy()
    root = Path(args.export_dir or tempfile.mkdtemp(prefix="facebot-precision-"))
    fp32_dir = Path(args.fp32_dir) if args.fp32_dir else export_fp32(args, root / "fp32", sampling)
    fp32 = read_manifest(fp32_dir, expect={"precision": "fp32"})
    cfg = LMConfig(**fp32["config"])
    pcms = speechlike_signal(args.frames, fp32["frame_size"], args.seed)
    frames = record_fp32(fp32_dir, fp32, cfg, sampling, pcms, args.threads)

    def nbytes(m, key):
        return sum(g.get(key, 0) for g in m["graphs"].values()) / 1e6

    def row(name, m, got, ms):
        cells = []
        for graph, key in (("temporal", "text"), ("depth", "tokens"), ("encoder", "codes"),
                           ("face_head", "face_tokens")):
            a = agreement(frames, got, graph, key)
            cells.append(f"{'-' if a is None else f'{100 * a:.1f} %':>12}")
        print(f"{name:<10}" + "".join(cells) + f"{nbytes(m, 'stored_bytes'):>11.1f}{nbytes(m, 'frame_bytes'):>11.1f}"
              f"{np.median(ms):>11.1f}")

    print(f"token agreement with the fp32 graphs, config dim {cfg.dim} x {cfg.num_layers} layers, {args.frames} "
          f"frames, greedy, teacher-forced (each graph gets the fp32 run's inputs; depth and face_head the "
          f"variant's own h), {args.threads} thread(s); face path {'included' if fp32.get('face') else 'absent'}")
    print(f"{'precision':<10}{'text':>12}{'audio':>12}{'Mimi codes':>12}{'face':>12}{'stored MB':>11}"
          f"{'read MB':>11}{'graphs ms':>11}")
    got, ms = replay(fp32_dir, fp32, frames, args.threads)
    row("fp32", fp32, got, ms)
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        precision, _, block = variant.partition("-")
        m = derive_export(fp32_dir, root / variant, precision, int(block) if block else None)
        got, ms = replay(root / variant, m, frames, args.threads)
        row(variant, m, got, ms)
    return 0


def export_fp32(args, folder, sampling):
    """The model (random weights from --seed, the bench's face model) exported in fp32."""
    from bench_duplex import make_face

    from facebot.export.model_export import ensure_export
    from facebot.pipeline.model_backend import ModelBackend
    from facebot.config.model import ModelOptions

    backend = ModelBackend(ModelOptions(config=args.config, greedy=True, init_seed=args.seed))
    face_lm, face_codec = make_face(backend.lm.cfg, args.seed)
    t0 = time.perf_counter()
    folder, _ = ensure_export(folder, backend.codec, backend.lm, sampling, "fp32", face_lm, face_codec,
                              log=lambda m: print(m, file=sys.stderr))
    print(f"fp32 export: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return folder


if __name__ == "__main__":
    sys.exit(main())
