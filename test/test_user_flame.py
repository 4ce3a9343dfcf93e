"""The parts of the user's FLAME that need no detector: image encodings, the fitted
blendshape map, the choice among several faces, the track on the model's clock, intrinsics."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facebot.face.controls import flame_to_control_dict
from facebot.face.flame import FlameFrame, FrameSource
from facebot.perception.blendshape_map import MAP_FILE, BlendshapeMap, correspondence, default_map, fit_blendshape_map
from facebot.perception.camera import CameraIntrinsics
from facebot.perception.images import ImageError, compressed_to_rgb, raw_to_rgb
from facebot.perception.landmarker import BLENDSHAPE_INDEX, Detection, DetectedFace
from facebot.perception.user_flame import FaceSelector
from facebot.perception.user_track import UserFaceTrack


def rgb_image(h=6, w=8):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc, make, tol", [
    ("rgb8", lambda im: im, 0),
    ("bgr8", lambda im: im[:, :, ::-1], 0),
    ("rgba8", lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]), 0),
    ("bgra8", lambda im: np.dstack([im[:, :, ::-1], np.zeros(im.shape[:2], np.uint8)]), 0),
    ("yuv422", lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2YUV_UYVY) if hasattr(cv2, "COLOR_RGB2YUV_UYVY") else None, 6),
])
def test_raw_encodings(enc, make, tol):
    im = np.repeat(rgb_image(6, 4), 2, axis=1)  # pixel pairs share a colour (4:2:2 chroma)
    data = make(im)
    if data is None:
        pytest.skip("this OpenCV cannot make UYVY")
    data = np.ascontiguousarray(data)
    ch = data.shape[2] if data.ndim == 3 else 2
    step = data.shape[1] * ch + 4  # padded rows, as drivers send them
    buf = np.zeros((im.shape[0], step), np.uint8)
    buf[:, : data.shape[1] * ch] = data.reshape(im.shape[0], -1)
    out = raw_to_rgb(enc, im.shape[0], im.shape[1], step, buf.tobytes())
    assert out.shape == im.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - im).max() <= tol


def test_yuv422_of_a_flat_colour_and_mono8():
    # UYVY of mid grey: U = V = 128, Y = 128
    uyvy = np.full((4, 8 * 2), 128, np.uint8)
    out = raw_to_rgb("yuv422", 4, 8, 16, uyvy.tobytes())
    assert np.abs(out.astype(int) - 128).max() <= 2
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = raw_to_rgb("mono8", 3, 4, 4, mono.tobytes())
    assert np.array_equal(out[:, :, 0], mono) and np.array_equal(out[:, :, 2], mono)


def test_jpeg_and_png_decode_and_bad_images_are_refused():
    im = rgb_image(32, 32)
    ok, jpg = cv2.imencode(".png", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    assert np.array_equal(compressed_to_rgb(jpg.tobytes(), "png"), im)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    assert compressed_to_rgb(jpg.tobytes(), "jpeg").shape == im.shape
    for args, msg in [(("yuv420", 2, 2, 6, b"0" * 12), "not supported"),
                      (("rgb8", 0, 2, 6, b""), "empty"),
                      (("rgb8", 2, 2, 5, b"0" * 10), "below width"),
                      (("rgb8", 2, 2, 6, b"0" * 11), "expected 12"),
                      (("yuv422", 2, 3, 6, b"0" * 12), "even width"),
                      (("rgb8", 20000, 20000, 60000, b""), "larger than")]:
        with pytest.raises(ImageError, match=msg):
            raw_to_rgb(*args)
    with pytest.raises(ImageError, match="empty"):
        compressed_to_rgb(b"", "jpeg")


def test_the_shipped_blendshape_map_is_the_documented_fit():
    shipped = BlendshapeMap.load(MAP_FILE)
    fresh = fit_blendshape_map()
    assert np.allclose(shipped.weights, fresh.weights, atol=1e-9)
    assert np.allclose(shipped.offset, fresh.offset, atol=1e-9)
    assert shipped.rms.max() < 0.05  # the samples are fitted closely


@pytest.mark.parametrize("controls", [{"smile": 0.8}, {"jaw_open": 0.6}, {"brow_raise": 0.7},
                                      {"lip_round": 0.7, "jaw_open": 0.3}, {"brow_furrow": 0.9}])
def test_blendshapes_read_back_as_the_controls_that_made_them(controls):
    from facebot.face.controls import controls_to_array

    shapes = controls_to_array(controls) @ correspondence() + 0.03
    jaw, exp = default_map()(np.clip(shapes, 0, 1))
    got = flame_to_control_dict({"expression": exp, "jaw_pose": [jaw, 0, 0]})
    for name, value in controls.items():
        assert abs(got[name] - value) < 0.12, (name, got)
    others = [v for k, v in got.items() if k not in controls]
    assert max(others) < 0.15


def fake_face(x, y, jaw=0.0, w=80.0):
    lm = np.zeros((478, 3), np.float32)
    lm[:, 0], lm[:, 1] = x, y
    lm[473, 0], lm[468, 0] = x + 15, x - 15
    bs = np.zeros(52, np.float32)
    bs[BLENDSHAPE_INDEX["jawOpen"]] = jaw
    return DetectedFace(lm, bs, np.eye(4), (x - w / 2, y - w / 2, x + w / 2, y + w / 2))


def test_several_faces_the_speaking_one_or_the_one_nearest_the_centre():
    sel = FaceSelector()
    rules = []
    for i in range(10):  # the left person talks (mouth moving), the right one is nearer the centre
        det = Detection([fake_face(100, 240, jaw=0.5 * (i % 2)), fake_face(360, 240, jaw=0.05)],
                        i, 640, 480)
        rules.append(sel.choose(det, user_speaking=True))
    assert rules[-1] == (0, "speaking")
    quiet = Detection([fake_face(100, 240, jaw=0.5), fake_face(360, 240)], 11, 640, 480)
    assert sel.choose(quiet, user_speaking=False) == (1, "centre")  # nobody speaks: the centre
    assert sel.choose(Detection([], 12, 640, 480)) is None
    assert FaceSelector().choose(Detection([fake_face(50, 50)], 0, 640, 480)) == (0, "only")


def frame(t, yaw=0.0):
    return FlameFrame(neck_pose=[0, yaw, 0], stamp_ns=t, source=FrameSource.PERCEIVED)


def test_the_track_is_causal_and_forgets_old_faces():
    tr = UserFaceTrack(max_age_s=0.3)
    assert tr.frames_for(0) is None
    tr.add(frame(100_000_000, 0.1), [0, 0, 1])
    tr.add(frame(133_000_000, 0.2), [0, 0, 1])
    got = tr.frames_for(100_000_000)  # 100 and 140 ms: the frames captured at or before
    assert [f.neck_pose[1] for f in got] == pytest.approx([0.1, 0.2])
    assert [f.stamp_ns for f in got] == [100_000_000, 140_000_000]
    assert all(f.source == FrameSource.PERCEIVED for f in got)
    assert tr.frames_for(50_000_000) is None  # before the first image: nothing from the future
    assert tr.frames_for(460_000_000) is None  # 327 ms old: gone
    tr.add(frame(120_000_000))  # late: refused, counted
    assert tr.out_of_order == 1
    bad = frame(200_000_000)
    bad.neck_pose[0] = np.nan
    tr.add(bad)
    assert tr.out_of_order == 2
    assert np.allclose(tr.position_at(140_000_000), [0, 0, 1])


def test_intrinsics_from_camera_info_and_resizing():
    k = [500.0, 0, 320, 0, 510.0, 240, 0, 0, 1]
    cam = CameraIntrinsics.from_k(k, 640, 480)
    assert cam.project(cam.ray(100, 50) * 3.0) == pytest.approx((100, 50))
    half = cam.scaled_to(320, 240)
    assert (half.fx, half.cx) == (250.0, 160.0)
    with pytest.raises(ValueError, match="fx, fy > 0"):
        CameraIntrinsics.from_k([0] * 9, 640, 480)  # an uncalibrated CameraInfo
