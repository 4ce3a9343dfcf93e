"""Face display renderers against the 25 fps budget (40 ms per frame), on one core.

Renders a realistic FLAME stream (the procedural face driven by speech-like audio cues:
talking, then listening with the user speaking, with blinks, saccades and head motion) at the
configured size (480 x 480 by default) with ``cv2.setNumThreads(1)``, and prints ms/frame
(p50 / p99 / max) and the achieved frame rate next to the budget, for the stylised renderer
and the FLAME mesh renderer (a converted model given with ``--flame``, otherwise a synthetic
model of FLAME's size: ~5k vertices, ~10k triangles).

    python bench/bench_renderer.py [--frames 500] [--flame model.npz] [--no-mesh] [--save-dir DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: set before numpy loads its BLAS

import numpy as np  # noqa: E402

BUDGET_MS = 40.0  # one FLAME frame at 25 fps


def flame_stream(n_frames: int, seed: int = 0):
    """``n_frames`` procedural FLAME frames from speech-like cues (4 s talking, 2 s listening)."""
    from facebot.face.cues import FaceCue
    from facebot.face.procedural import ProceduralFace
    from facebot.config.face import ProceduralFaceConfig

    face = ProceduralFace(ProceduralFaceConfig(seed=seed))
    rng = np.random.default_rng(seed)
    frames = []
    t = 0.0
    sr, n = 24_000, 1920
    while len(frames) < n_frames:
        phase = t % 6.0
        talking = phase < 4.0
        ts = t + np.arange(n) / sr
        if talking:  # noise under a ~4 Hz syllable envelope, with pauses between phrases
            env = np.clip(np.sin(2 * np.pi * 4.1 * ts) + 0.3 * np.sin(2 * np.pi * 1.3 * ts), 0, None)
            audio = (0.15 * env * rng.normal(0, 1, n)).astype(np.float32)
        else:
            audio = np.zeros(n, np.float32)
        cue = FaceCue(robot_audio=audio, robot_speaking=talking, user_speaking=not talking,
                      user_speech_prob=0.0 if talking else 0.9, user_pause=(not talking and 5.0 <= phase < 5.08))
        frames.extend(face.step(cue))
        t += n / sr
    return frames[:n_frames]


def measure(render_into, frames, out, warmup: int = 5):
    for f in frames[:warmup]:
        render_into(f, out)
    times = np.empty(len(frames))
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        render_into(f, out)
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def report(name: str, times: np.ndarray) -> str:
    p50, p99, worst = np.percentile(times, 50), np.percentile(times, 99), times.max()
    fps = 1e3 / times.mean()
    verdict = "within" if p99 <= BUDGET_MS else "OVER"
    return (f"{name:<44} {p50:8.2f} {p99:8.2f} {worst:8.2f} {fps:9.1f}   {verdict} the {BUDGET_MS:.0f} ms budget "
            f"(p99 uses {100 * p99 / BUDGET_MS:.0f} %)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500, help="frames to render per renderer (default 500)")
    ap.add_argument("--flame", default=None, help="FLAME model .npz from `facebot flame-convert`")
    ap.add_argument("--no-mesh", action="store_true", help="only the stylised renderer")
    ap.add_argument("--config", default=None, help="face display YAML (default config/face_display.yaml)")
    ap.add_argument("--save-dir", default=None, help="write a few rendered frames as PNG here")
    args = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from facebot.face.flame_mesh import FlameModel
    from facebot.robot.display import FaceRenderer, load_display_config
    from facebot.robot.mesh_renderer import MeshRenderer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from synthetic_flame import synthetic_flame  # the tests' stand-in model

    cfg = load_display_config(args.config)
    frames = flame_stream(args.frames)
    out = np.empty((cfg.height, cfg.width, 3), np.uint8)
    print(f"face display renderers, {cfg.width}x{cfg.height}, {len(frames)} procedural frames, "
          f"cv2 {cv2.__version__} with {cv2.getNumThreads()} thread, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs visible")
    print(f"{'renderer':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean fps':>9}   vs 25 fps")
    results = {}
    stylised = FaceRenderer(cfg)
    results["stylised"] = measure(stylised.render_into, frames, out)
    print(report("stylised (FaceRenderer)", results["stylised"]), flush=True)

    mesh = None
    if not args.no_mesh:
        if args.flame:
            model, label = FlameModel.load(args.flame), f"mesh ({Path(args.flame).name})"
        else:
            model, label = FlameModel(synthetic_flame(n_lat=70, n_lon=72)), "mesh (synthetic, FLAME-sized)"
        label += f" {model.n_vertices}v/{model.n_faces}f"
        mesh = MeshRenderer(model, cfg)
        mesh_frames = frames[: max(50, len(frames) // 5)]
        t0 = time.perf_counter()
        for f in mesh_frames:
            model.vertices(f)
        verts_ms = (time.perf_counter() - t0) * 1e3 / len(mesh_frames)
        results["mesh"] = measure(mesh.render_into, mesh_frames, out)
        print(report(label, results["mesh"]))
        culled = MeshRenderer(model, dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, cull_backfaces=True)))
        results["mesh_culled"] = measure(culled.render_into, mesh_frames, out)
        print(report("  same, cull_backfaces: true", results["mesh_culled"]))
        print(f"  of which vertex computation (blendshapes + LBS): {verts_ms:.2f} ms/frame")
    if args.save_dir:
        d = Path(args.save_dir)
        d.mkdir(parents=True, exist_ok=True)
        for i in (0, len(frames) // 3, len(frames) // 2):
            cv2.imwrite(str(d / f"stylised_{i:04d}.png"), stylised.render(frames[i])[:, :, ::-1])
            if mesh is not None:
                cv2.imwrite(str(d / f"mesh_{i:04d}.png"), mesh.render(frames[i])[:, :, ::-1])
        print(f"frames written to {d}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
