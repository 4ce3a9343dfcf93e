"""Moshi's acoustic delays (runtime/delays.py) against their definition, frame by frame and
through many turns of the delay ring: stream k at frame t carries the token of time t - delay_k;
the output lines the generated streams up on one time once the slowest has caught up."""
import dataclasses

import pytest
import torch

from facebot.model.configs import MOSHI_DELAYS, load_config
from facebot.runtime.delays import UNGENERATED_TOKEN, Delays

TINY = load_config("tiny")
# text 0; robot audio 0..3; user audio 0..2: slots of the ring are reused at different phases
UNEVEN = dataclasses.replace(TINY, delays=[0, 0, 3, 1, 2, 1, 3, 2, 1, 0, 2, 1, 2, 0, 1, 2, 1])


def run(cfg, frames, batch=2, seed=0):
    """(fed [T, B, K], out [T, B, 1 + dep_q], valid [T], user [T, B, n_user], gen [T, B, 1 + dep_q])."""
    d = Delays(cfg)
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(0, cfg.card, (frames, batch, d.n_user), generator=g)
    gen = torch.randint(0, cfg.card, (frames, batch, d.Du), generator=g)
    cache = d.init_cache(batch)
    fed, out, valid = [], [], []
    for t in range(frames):
        offset = torch.tensor([t])
        fed.append(d.feed(user[t], cache, offset))
        o, v = d.collect(gen[t], cache, offset + 1)
        out.append(o)
        valid.append(bool(v))
    return torch.stack(fed), torch.stack(out), valid, user, gen


@pytest.mark.parametrize("cfg", [TINY, UNEVEN], ids=["moshi", "uneven"])
def test_the_input_of_frame_t_is_each_streams_token_of_t_minus_its_delay(cfg):
    frames = 7 * (cfg.max_delay + 2) + 3  # several turns of the ring
    fed, _, _, user, gen = run(cfg, frames)
    d = Delays(cfg)
    for t in range(frames):
        for k in range(cfg.num_codebooks):
            delay = cfg.delays[k]
            got = fed[t, :, k]
            if t <= delay:  # the stream's first real token is not due yet
                expect = torch.full_like(got, cfg.text_card if k == 0 else cfg.card)
            elif k < d.Du:  # generated streams: the model's own token of the previous frame
                expect = gen[t - 1, :, k]
            else:  # the user's codes, held back by the stream's delay
                expect = user[t - delay, :, k - d.Du]
            assert torch.equal(got, expect), (t, k)


@pytest.mark.parametrize("cfg", [TINY, UNEVEN], ids=["moshi", "uneven"])
def test_the_output_lines_the_generated_streams_up_on_one_time(cfg):
    frames = 7 * (cfg.max_delay + 2) + 3
    _, out, valid, _, gen = run(cfg, frames)
    lag = cfg.max_delay
    assert valid == [t >= lag for t in range(frames)]  # nothing until the slowest stream is in
    for t in range(frames):
        if t < lag:
            assert (out[t] == UNGENERATED_TOKEN).all()
            continue
        tau = t - lag  # the time every stream of this output row belongs to
        for k in range(1 + cfg.dep_q):
            assert torch.equal(out[t, :, k], gen[tau + cfg.delays[k], :, k]), (t, k)


def test_layout_of_the_delay_buffer():
    d = Delays(TINY)
    assert TINY.delays == MOSHI_DELAYS and d.max_delay == 1
    assert (d.CT, d.Du, d.n_user) == (3, 1 + TINY.dep_q, TINY.n_q - TINY.dep_q)
    cache = d.init_cache(4)
    assert cache.shape == (4, TINY.num_codebooks, 3) and cache.dtype == torch.long
    assert (cache == UNGENERATED_TOKEN).all()
    assert d.initial.tolist() == [TINY.text_card] + [TINY.card] * TINY.n_q
    assert Delays(UNEVEN).CT == 5
