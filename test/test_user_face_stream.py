"""The user's face stream of the model: perceived FLAME frames -> face codec tokens, the
no-face token without a face, the same rule in training, and the model backend's use of it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facebot.face.flame import FlameFrame, FrameSource
from facebot.model.face_codec import FaceCodec, FaceCodecConfig, save_face_codec
from facebot.model.face_transformer import FaceLM, FaceTransformerConfig, save_face_lm
from facebot.model.lm import build_lm
from facebot.pipeline.backend import DuplexInput
from facebot.runtime.user_face import UserFaceEncoder, user_face_tokens

N, K = 4, 16


def codec(seed=0):
    torch.manual_seed(seed)
    return FaceCodec(FaceCodecConfig(hidden=32, codebook_size=K, codebook_dim=8, num_tokens=N,
                                     dim_feedforward=64)).eval()


def track(t=24, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.5, (t, 56))).astype(np.float32)


def frames_of(core, i):
    return [FlameFrame.from_core(core[2 * i + j], source=FrameSource.PERCEIVED) for j in range(2)]


def test_streaming_tokens_equal_the_training_tokens_with_gaps():
    c = codec()
    face = track()
    present = np.ones(face.shape[0], bool)
    present[6:9] = False  # the face leaves for 3 frames (steps 3 and 4 lose it)
    batch = user_face_tokens(c, face, present)
    enc = UserFaceEncoder(c, no_face_token=K)
    stream = []
    for i in range(face.shape[0] // 2):
        frames = [f if present[2 * i + j] else None for j, f in enumerate(frames_of(face, i))]
        stream.append(enc.step(frames)[0])
    stream = torch.stack(stream, 1)
    assert torch.equal(stream, batch)
    assert (batch[:, 3:5] == K).all() and (batch[:, :3] < K).all() and (batch[:, 5:] < K).all()
    assert enc.steps_without_face == 2 and enc.steps_with_face == face.shape[0] // 2 - 2


def test_no_face_at_all_is_the_no_face_token_everywhere():
    c = codec()
    assert (user_face_tokens(c, track(), np.zeros(24, bool)) == K).all()
    enc = UserFaceEncoder(c, no_face_token=K)
    assert enc.step(None).tolist() == [[K] * N]
    bad = frames_of(track(), 0)
    bad[1] = None
    assert enc.step(bad).tolist() == [[K] * N]  # half a step is no face either


def test_training_reads_the_user_track_with_the_same_rule(tmp_path):
    """prepare_split's user tokens are user_face_tokens of the partner's track and mask."""
    from facebot.train import face_train

    seen = {}
    real = face_train.user_face_tokens

    def spy(c, face, present=None):
        seen["present"] = present
        return real(c, face, present)

    class Item(dict):
        pass

    item = {"audio_self": np.zeros(24000, np.float32), "audio_partner": np.zeros(24000, np.float32),
            "face_self": track(25 * 1), "face_partner": track(25 * 1), "id": "x/a",
            "present_partner": np.r_[np.ones(12, bool), np.zeros(13, bool)]}
    item["face_self"], item["face_partner"] = item["face_self"][:24], item["face_partner"][:24]
    item["present_partner"] = item["present_partner"][:24]

    class FakeDataset:
        def __init__(self, *a, **k):
            pass

        def __iter__(self):
            yield item

    mp = pytest.MonkeyPatch()
    mp.setattr(face_train, "DyadicDataset", FakeDataset)
    mp.setattr(face_train, "user_face_tokens", spy)
    try:
        mimi = face_train.make_mimi(40)
        lm_cfg = face_train.make_lm().cfg
        data = face_train.prepare_split(tmp_path, "train", mimi, codec(), lm_cfg, clip_s=1.0)
    finally:
        mp.undo()
    assert seen["present"] is item["present_partner"]
    uf = data["user_face"][0]  # [N, S]
    assert (uf[:, 6:] == K).all() and (uf[:, :6] < K).all()


@pytest.fixture(scope="module")
def face_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("face")
    torch.manual_seed(0)
    lm = build_lm("tiny")
    flm = FaceLM(FaceTransformerConfig(dim_in=lm.cfg.dim, dim=32, num_layers=2, num_heads=4,
                                       num_tokens=N, codebook_size=K), zero_init_streams=False)
    save_face_lm(flm, folder / "face_lm.safetensors")
    save_face_codec(codec(), folder / "face_codec.safetensors")
    return folder


def _run(backend, user_core, steps=6):
    from facebot.export.verify import speechlike_signal

    backend.reset(0)
    faces = []
    for i, pcm in enumerate(speechlike_signal(steps, 1920, 5)):
        frames = frames_of(user_core, i) if user_core is not None else None
        out = backend.step(DuplexInput(i, pcm, i * 80_000_000, user_flame=frames))
        faces.append(np.stack([f.to_core() for f in out.flame]))
    return np.stack(faces)


def test_the_model_backend_feeds_the_user_face_to_the_model(face_weights):
    from facebot.pipeline.model_backend import ModelBackend
    from facebot.config.model import ModelOptions

    be = ModelBackend(ModelOptions(config="tiny", greedy=True, face_weights=str(face_weights)))
    without = _run(be, None)
    assert be.user_face.steps_without_face == 6 and be.user_face.steps_with_face == 0
    again = _run(be, None)
    seen = _run(be, track(16, seed=2))
    assert be.user_face.steps_with_face == 6
    other = _run(be, track(16, seed=3))
    assert np.array_equal(without, again)  # deterministic
    assert np.abs(seen - without).max() > 1e-4  # the user's face changes the robot's face
    assert np.abs(seen - other).max() > 1e-4  # and which face it is matters
