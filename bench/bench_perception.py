"""Face perception against the camera budget, on one core: 640x480 frames -> the user's FLAME.

A 640x480 clip made from scikit-image's astronaut portrait (her head, ~120 px wide; it drifts and rolls a
little from frame to frame, as a person in front of a robot does) goes through
MediaPipe's FaceLandmarker and our estimator (blendshape map, head pose, smoothing, face
choice). The process is pinned to one CPU core (``os.sched_setaffinity``) and BLAS to one
thread. Printed per variant: ms per frame for the detector and for the estimator (p50 / p99 /
max) and frames per second, next to the 25 fps target, for

* ``video``: tracking mode (what ``facebot run --video``, ``facebot bag`` and the
  face_perception node use: the face detector runs only when the tracker loses the face);
* ``image``: every frame detected from scratch (the baseline, for unrelated stills).

    python bench/bench_perception.py [--frames 200] [--cores 1] [--size 640x480]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TARGET_FPS = 25.0


def clip(n: int, width: int, height: int) -> list[np.ndarray]:
    import cv2
    from skimage import data

    # her head and shoulders, the face ~120 px wide: a person about 1 m from a 60-degree camera
    face = cv2.resize(data.astronaut()[0:300, 80:380], (320, 320), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = int(width / 2 - 160 + 40 * np.sin(i / 15))
        y = int(height / 2 - 160 + 20 * np.sin(i / 23))
        m = cv2.getRotationMatrix2D((160, 160), 10 * np.sin(i / 10), 1.0)
        canvas[y:y + 320, x:x + 320] = cv2.warpAffine(face, m, (320, 320), borderMode=cv2.BORDER_REFLECT)
        frames.append(canvas)
    return frames


def run(variant: str, frames: list[np.ndarray]) -> dict:
    from facebot.perception.landmarker import FaceDetector
    from facebot.perception.user_flame import UserFlameEstimator

    det = FaceDetector(tracking=variant == "video")
    est = UserFlameEstimator()
    for img in frames[:5]:  # warm-up
        det.detect(img, 0)
    det.close()
    det = FaceDetector(tracking=variant == "video")
    t_det, t_est, found = [], [], 0
    for i, img in enumerate(frames):
        t0 = time.perf_counter()
        d = det.detect(img, i * 40_000_000)
        t1 = time.perf_counter()
        face = est.update(d)
        t2 = time.perf_counter()
        t_det.append((t1 - t0) * 1e3)
        t_est.append((t2 - t1) * 1e3)
        found += face is not None
    det.close()
    total = np.add(t_det, t_est)
    return {"variant": variant, "det": np.array(t_det), "est": np.array(t_est), "total": total,
            "fps": 1000.0 / float(np.mean(total)), "found": found, "frames": len(frames)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin the process to")
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)
    frames = clip(args.frames, w, h)
    print(f"{args.frames} frames of {w}x{h}, pinned to core(s) {cores}, target {TARGET_FPS:.0f} fps")
    print(f"{'variant':8} {'detector p50/p99/max ms':>26} {'estimator p50/p99 ms':>22} {'fps':>7} {'faces':>7}")
    for variant in ("video", "image"):
        r = run(variant, frames)
        d, e = r["det"], r["est"]
        print(f"{variant:8} {np.percentile(d, 50):8.2f} {np.percentile(d, 99):8.2f} {d.max():8.2f} "
              f"{np.percentile(e, 50):10.2f} {np.percentile(e, 99):10.2f} {r['fps']:7.1f} "
              f"{r['found']:>3}/{r['frames']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
