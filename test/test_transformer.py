"""facebot.model.transformer against moshi's StreamingTransformer (random weights copied through
our importer), streaming vs non-streaming, static state shapes and ring-buffer wrap-around."""
import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("NO_CUDA_GRAPH", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from facebot.model.checkpoint import CheckpointError, load_state  # noqa: E402
from facebot.model.transformer import StreamingTransformer  # noqa: E402
from facebot.model.transformer_config import TransformerConfig  # noqa: E402

torch.set_num_threads(1)

moshi_tr = pytest.importorskip("moshi.modules.transformer")

MIMI_LIKE = dict(d_model=64, num_heads=4, num_layers=2, dim_feedforward=128, causal=True,
                 context=12, layer_scale=0.01, gating="none", norm="layer_norm",
                 positional_embedding="rope", max_period=10000.0)
LM_LIKE = dict(d_model=64, num_heads=4, num_layers=2, dim_feedforward=int(4.125 * 64),
               causal=True, context=10, gating="silu", norm="rms_norm_f32",
               positional_embedding="rope")
DEP_LIKE = dict(d_model=32, num_heads=2, num_layers=2, dim_feedforward=int(4.125 * 32),
                causal=True, context=None, gating="silu", norm="rms_norm_f32",
                positional_embedding="none", weights_per_step=8)
SIN_LIKE = dict(d_model=32, num_heads=2, num_layers=1, dim_feedforward=64, causal=True,
                context=16, gating="none", norm="layer_norm", positional_embedding="sin")


def _pair(kw, seed=0):
    torch.manual_seed(seed)
    ref = moshi_tr.StreamingTransformer(**kw).eval()
    with torch.no_grad():  # moshi inits norms/scales to constants: randomise everything
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5))
    ours = StreamingTransformer(TransformerConfig(**kw)).eval()
    load_state(ours, ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("kw", [MIMI_LIKE, LM_LIKE, SIN_LIKE], ids=["mimi", "lm", "sin"])
def test_streaming_matches_moshi(kw):
    ref, ours = _pair(kw)
    torch.manual_seed(1)
    T = 40  # well past the context: the ring buffer wraps several times
    x = torch.randn(2, T, kw["d_model"])
    with torch.no_grad():
        with ref.streaming(2):
            ys_ref = [ref(x[:, t:t + 2]) for t in range(0, T, 2)]  # 2 positions per call (Mimi)
        state = ours.init_state(2)
        shapes = {k: (v.shape, v.dtype) for k, v in state.items()}
        ys = []
        for t in range(0, T, 2):
            y, state = ours.step(x[:, t:t + 2], state)
            ys.append(y)
        assert {k: (v.shape, v.dtype) for k, v in state.items()} == shapes
        assert int(state["offset"]) == T
    torch.testing.assert_close(torch.cat(ys, 1), torch.cat(ys_ref, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [MIMI_LIKE, LM_LIKE, SIN_LIKE], ids=["mimi", "lm", "sin"])
def test_forward_matches_moshi_and_streaming(kw):
    ref, ours = _pair(kw)
    torch.manual_seed(2)
    x = torch.randn(1, 30, kw["d_model"])
    with torch.no_grad():
        y_ref = ref(x)
        y = ours(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        # one position per step: streaming == non-streaming exactly in semantics, also after wrap
        state = ours.init_state(1)
        ys = []
        for t in range(30):
            yt, state = ours.step(x[:, t:t + 1], state)
            ys.append(yt)
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=1e-5, atol=1e-5)


def test_two_positions_per_step_with_wider_capacity_equals_forward():
    kw = dict(MIMI_LIKE, kv_capacity=MIMI_LIKE["context"] + 1)
    torch.manual_seed(0)
    ours = StreamingTransformer(TransformerConfig(**kw)).eval()
    x = torch.randn(1, 40, kw["d_model"])
    with torch.no_grad():
        y = ours(x)
        state = ours.init_state(1)
        ys = []
        for t in range(0, 40, 2):
            yt, state = ours.step(x[:, t:t + 2], state)
            ys.append(yt)
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=1e-5, atol=1e-5)


def test_depformer_weights_per_step_matches_moshi():
    ref, ours = _pair(DEP_LIKE)
    torch.manual_seed(3)
    x = torch.randn(2, 8, DEP_LIKE["d_model"])
    with torch.no_grad():
        y_full = ours(x)
        state = ours.init_state(2)
        for frame in range(3):  # the state is reused across frames without any reset
            xf = x if frame == 0 else torch.randn_like(x)
            with ref.streaming(2):
                y_ref = torch.cat([ref(xf[:, k:k + 1]) for k in range(8)], 1)
            ys = []
            for k in range(8):
                yk, state = ours.step(xf[:, k:k + 1], state, step_index=k)
                ys.append(yk)
            torch.testing.assert_close(torch.cat(ys, 1), y_ref, rtol=1e-5, atol=1e-5)
            if frame == 0:
                torch.testing.assert_close(y_full, y_ref, rtol=1e-5, atol=1e-5)


def test_wrap_around_long_run_is_position_invariant():
    """After wrap-around the window holds the last `capacity` positions with their true relative
    distances: the same inputs at positions 0.. and at positions 10^6.. give the same output once
    the window is full of the same data (RoPE depends only on q - k)."""
    kw = dict(LM_LIKE, context=8)
    torch.manual_seed(0)
    ours = StreamingTransformer(TransformerConfig(**kw)).eval()
    x = torch.randn(1, 24, kw["d_model"])
    with torch.no_grad():
        s1 = ours.init_state(1)
        s2 = ours.init_state(1)
        s2["offset"].fill_(10**6 + 3)
        for t in range(20):
            y1, s1 = ours.step(x[:, t:t + 1], s1)
            y2, s2 = ours.step(x[:, t:t + 1], s2)
            # s2's first steps see never-written (zero) slots as valid positions, which
            # propagates up one layer per window: equal once 2 windows of real data passed.
            if t >= 16:
                torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-4)


def test_checkpoint_errors_are_clear():
    ref, ours = _pair(LM_LIKE)
    sd = dict(ref.state_dict())
    sd.pop("layers.1.norm1.alpha")
    sd["layers.0.extra"] = torch.zeros(3)
    sd["layers.0.gating.linear_out.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as err:
        load_state(ours, sd)
    msg = str(err.value)
    assert "layers.1.norm1.alpha" in msg and "layers.0.extra" in msg
    assert "layers.0.gating.linear_out.weight: [5, 5] vs [64, 176]" in msg
    assert err.value.missing == ["layers.1.norm1.alpha"]
