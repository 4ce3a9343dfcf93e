"""Toy-scale end-to-end run of the Moshi-Face training / evaluation pipeline (facebot/train/system_table)."""
import math

import torch

from facebot.model.configs import get_config
from facebot.train.face_train import build_tokens


def test_build_tokens_layout():
    cfg = get_config("tiny")
    T = 6
    robot = torch.arange(8 * T).view(8, T) % 40
    user = (torch.arange(8 * T).view(8, T) + 7) % 40
    tok = build_tokens(cfg, robot, user, text_id=3)
    assert tok.shape == (17, T)
    assert (tok[:, 0] == torch.tensor([cfg.text_card] + [cfg.card] * 16)).all()  # initial tokens
    assert tok[0, 1] == 3 and tok[1, 1] == robot[0, 0]  # text / semantic: time p - 1
    assert tok[2, 1] == cfg.card and tok[2, 2] == robot[1, 0]  # acoustic: time p - 2
    assert tok[9, 0] == cfg.card and tok[9, 1] == user[0, 1]  # user semantic: time p (LMStep)
    assert tok[10, 1] == cfg.card and tok[10, 2] == user[1, 1]  # user acoustic: time p - 1


def test_face_system_table_toy(tmp_path):
    from facebot.train import system_table as fst
    torch.set_num_threads(1)
    r = fst.run(dialogues=3, seconds=8.0, steps=4, joint_steps=2, codec_steps=4, clip_s=2.0,
                batch=4, out_dir=tmp_path, verbose=False)
    assert list(r["rows"]) == fst.ROWS
    for name, row in r["rows"].items():
        for mode in ("tf", "fr"):
            assert all(math.isfinite(v) for v in row[mode].values()), (name, mode, row)
    assert (tmp_path / "ckpt" / "stage2.safetensors").exists()
    assert (tmp_path / "ckpt" / "stage3_lm.safetensors").exists()
    table = fst.format_table(r)
    for name in fst.ROWS:
        assert name in table
    from facebot.model.face_transformer import load_face_lm
    load_face_lm(tmp_path / "ckpt" / "stage3.safetensors")


def test_build_tokens_matches_streaming_step():
    """The batch layout reproduces what LMStep feeds its temporal transformer: same h."""
    from facebot.runtime.lm_step import LMStep
    from facebot.train.face_train import make_lm
    torch.manual_seed(0)
    lm = make_lm(0)
    step = LMStep(lm)
    T = 7
    user = torch.randint(0, lm.cfg.card, (8, T + 1))
    state = step.init_state(1)
    hs, gens = [], []
    with torch.no_grad():
        for t in range(T + 1):
            _, _, state, h, gen = step.step_hidden(user[:, t][None], state)
            hs.append(h[0])
            gens.append(gen[0])
    gens = torch.stack(gens)  # [T+1, 9]: text/semantic of time t, acoustic of time t-1
    robot = torch.cat([gens[:T, 1:2], gens[1:T + 1, 2:]], 1).T  # [8, T] by time
    tok = build_tokens(lm.cfg, robot, user[:, :T], text_id=gens[:T, 0])
    with torch.no_grad():
        h_batch, _ = lm.forward_text(tok[None])
    torch.testing.assert_close(h_batch[0], torch.stack(hs[:T]), atol=1e-4, rtol=1e-4)
