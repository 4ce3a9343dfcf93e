"""Token agreement and weight bytes of the exported graphs per precision (and int4 block size),
against the fp32 graphs, over the same streamed frames (greedy).

One fp32 export of the model (random weights, the face path included); the other precisions
are derived from it (:func:`facebot.export.onnx_export.derive_export`: the same conversion an
export applies, without tracing again). Each variant streams the same speech-like frames
through onnxruntime; a token agrees when it equals fp32's at the same frame and position (text
+ 8 audio codebooks), and "first diff" is the first frame whose tokens differ (after that the
streams feed back different tokens, so later agreement is agreement of diverged streams).
Bytes are what the graph files store and what a frame reads (all but the embedding tables).

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


def stream(folder, manifest, cfg, sampling, pcms, threads):
    from facebot.runtime.graph_loop import GraphDuplexStep
    from facebot.runtime.model_runtime import load_ort_runners

    loop = GraphDuplexStep(load_ort_runners(folder, manifest, "cpu", threads), cfg, sampling)
    loop.reset(0)
    tokens, times = [], []
    for pcm in pcms:
        t0 = time.perf_counter()
        r = loop.step(pcm)
        times.append((time.perf_counter() - t0) * 1000.0)
        tokens.append(r.tokens.copy())
    return np.stack(tokens), times


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
    ref, ref_ms = stream(fp32_dir, fp32, cfg, sampling, pcms, args.threads)
    valid = ref[:, 0] != -2

    def nbytes(m, key):
        return sum(g.get(key, 0) for g in m["graphs"].values()) / 1e6

    print(f"token agreement with fp32 graphs, config dim {cfg.dim} x {cfg.num_layers} layers, "
          f"{args.frames} frames greedy "
          f"({int(valid.sum())} with tokens), {args.threads} thread(s); face path "
          f"{'included' if fp32.get('face') else 'absent'}")
    print(f"{'precision':<12}{'tokens equal':>14}{'frames equal':>14}{'first diff':>12}"
          f"{'stored MB':>11}{'read/frame MB':>15}{'loop p50 ms':>13}")
    print(f"{'fp32':<12}{'100.0 %':>14}{'100.0 %':>14}{'-':>12}{nbytes(fp32, 'stored_bytes'):>11.1f}"
          f"{nbytes(fp32, 'frame_bytes'):>15.1f}{np.median(ref_ms):>13.1f}")
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        precision, _, block = variant.partition("-")
        t0 = time.perf_counter()
        m = derive_export(fp32_dir, root / variant, precision, int(block) if block else None)
        conv_s = time.perf_counter() - t0
        toks, ms = stream(root / variant, m, cfg, sampling, pcms, args.threads)
        same = (toks == ref)[valid]
        frames_same = same.all(axis=1)
        first = int(np.argmin(frames_same)) if not frames_same.all() else None
        print(f"{variant:<12}{100 * same.mean():>12.1f} %{100 * frames_same.mean():>12.1f} %"
              f"{('-' if first is None else str(first)):>12}{nbytes(m, 'stored_bytes'):>11.1f}"
              f"{nbytes(m, 'frame_bytes'):>15.1f}{np.median(ms):>13.1f}   (converted in {conv_s:.0f} s)")
    return 0


def export_fp32(args, folder, sampling):
    """The model (random weights from --seed, the bench's face model) exported in fp32."""
    from bench_duplex import make_face

    from facebot.export.model_export import ensure_export
    from facebot.pipeline.model_backend import ModelBackend, ModelOptions

    backend = ModelBackend(ModelOptions(config=args.config, greedy=True, init_seed=args.seed))
    face_lm, face_codec = make_face(backend.lm.cfg, args.seed)
    t0 = time.perf_counter()
    folder, _ = ensure_export(folder, backend.codec, backend.lm, sampling, "fp32", face_lm, face_codec,
                              log=lambda m: print(m, file=sys.stderr))
    print(f"fp32 export: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return folder


if __name__ == "__main__":
    sys.exit(main())
