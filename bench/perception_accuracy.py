"""Accuracy of the user's head pose on the transformed-photo set (the astronaut portrait).

Every image is made from scikit-image's astronaut with a known change of pose:

* in-plane rotations (-45..45 degrees): the head's roll in the camera frame must change by
  exactly the rotation (counter-clockwise on screen = + roll); printed: the error in degrees;
* the mirror image of each rotation: roll and yaw must change sign; printed: the sums
  (0 is perfect) and whether the yaw sign flipped;
* scale, shift, crop and brightness: the pose must not change; printed: the largest change
  of pitch, yaw or roll in degrees.

    python bench/perception_accuracy.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

DEG = 180.0 / np.pi


def main() -> int:
    import face_images as fi
    from facebot.perception.landmarker import FaceDetector
    from facebot.perception.user_flame import UserFlameEstimator

    det = FaceDetector(tracking=False)

    def pose(img):
        face = UserFlameEstimator().update(det.detect(img, 0))
        return None if face is None else face.neck_pose_camera * DEG

    base = fi.astronaut()
    p0 = pose(base)
    print(f"astronaut: pitch {p0[0]:.1f}, yaw {p0[1]:.1f}, roll {p0[2]:.1f} degrees (camera frame)")
    print(f"{'rotation':>9} {'roll change':>12} {'error':>7} | "
          f"{'mirror roll sum':>16} {'yaw a/b':>13} {'yaw flips':>9}")
    errors, flips = [], []
    for deg in (-45, -30, -20, -10, -5, 5, 10, 20, 30, 45):
        img = fi.rotated(base, deg)
        a, b = pose(img), pose(np.ascontiguousarray(img[:, ::-1]))
        if a is None or b is None:
            print(f"{deg:9d}  no face")
            continue
        err = (a[2] - p0[2]) - deg
        errors.append(err)
        flip = np.sign(a[1]) == -np.sign(b[1]) or abs(a[1]) < 0.5
        flips.append(flip)
        print(f"{deg:9d} {a[2] - p0[2]:12.2f} {err:7.2f} | {a[2] + b[2]:16.2f} {a[1]:6.1f}/{b[1]:6.1f} {str(flip):>9}")
    e = np.abs(errors)
    print(f"roll error: mean {e.mean():.2f}, max {e.max():.2f} degrees over {len(e)} rotations; "
          f"yaw sign flips under the mirror in {sum(flips)}/{len(flips)}")
    print(f"{'invariant':>22} {'max pose change (deg)':>22}")
    for name, img in [("scale 0.5", fi.scaled(base, 0.5)), ("scale 1.5", fi.scaled(base, 1.5)),
                      ("shift 60,40", fi.shifted(base, 60, 40)),
                      ("crop", np.ascontiguousarray(base[40:340, 100:400])),
                      ("brightness x0.5", fi.brightness(base, 0.5)),
                      ("brightness x1.3+20", fi.brightness(base, 1.3, 20))]:
        p = pose(img)
        print(f"{name:>22} {'no face' if p is None else f'{np.abs(p - p0).max():.2f}':>22}")
    det.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
