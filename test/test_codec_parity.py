"""Parity of our Mimi codec with Kyutai's reference (the ``moshi`` package), random weights.

moshi's Mimi is built with the same config and random weights, its all-zero codebooks filled
with random codewords (test/codec_reference.py), its ``state_dict()`` imported into ours
through the Kyutai key map; then both stream the same speech-like clip frame by frame.

Done when: encode gives identical codes on >= 99% of entries over 50 streamed frames, and
decoding the same codes differs by at most 1e-4 (max abs), at ``tiny`` (a small config of the
same structure) and ``small`` (Kyutai's real Mimi configuration).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("moshi", reason="the reference implementation (pip install --no-deps moshi==0.2.13)")

from facebot.model.checkpoint import save_safetensors  # noqa: E402
from facebot.model.codec import MimiCodec, MimiConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from codec_reference import build_reference, speech_like  # noqa: E402

torch.set_num_threads(1)
FRAMES = 50

CONFIGS = {
    "tiny": MimiConfig.tiny,
    "small": MimiConfig.mimi,  # Kyutai's Mimi
    # tiny with an 8-position attention window: the KV rings wrap after 4 frames
    "tiny-ring": lambda: MimiConfig.tiny(context=8),
}


def _stream(ref, ours, pcm, fs):
    n = pcm.shape[-1] // fs
    c_ref, c_ours, y_ref, y_ours = [], [], [], []
    with torch.inference_mode():
        with ref.streaming(1):
            for i in range(n):
                c_ref.append(ref.encode(pcm[..., i * fs:(i + 1) * fs]))
        c_ref = torch.cat(c_ref, -1)
        with ref.streaming(1):
            for i in range(n):
                y_ref.append(ref.decode(c_ref[..., i:i + 1]))
        state = ours.init_state(1)
        for i in range(n):
            c, state = ours.encode_step(pcm[..., i * fs:(i + 1) * fs], state)
            c_ours.append(c)
        for i in range(n):  # the reference's codes into our decoder: same input to both
            y, state = ours.decode_step(c_ref[..., i:i + 1], state)
            y_ours.append(y)
    return c_ref, torch.cat(c_ours, -1), torch.cat(y_ref, -1), torch.cat(y_ours, -1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_parity(name):
    cfg = CONFIGS[name]()
    ref = build_reference(cfg, seed=0)
    ours = MimiCodec(cfg).load_kyutai_state(ref.state_dict())
    pcm = speech_like(FRAMES * cfg.frame_size, cfg.sample_rate, seed=11)
    c_ref, c_ours, y_ref, y_ours = _stream(ref, ours, pcm, cfg.frame_size)
    assert c_ref.shape == c_ours.shape == (1, cfg.num_codebooks, FRAMES)
    match = (c_ref == c_ours).float().mean().item()
    diff = (y_ref - y_ours).abs().max().item()
    print(f"\n{name}: codes identical {100 * match:.2f}%, decode max |diff| {diff:.2e} "
          f"(reference peak {y_ref.abs().max().item():.3f})")
    # the test means something: codes vary and the audio is not silence
    assert min(len(set(row.tolist())) for row in c_ref[0]) >= 3
    assert y_ref.abs().max() > 1e-2
    assert match >= 0.99
    assert diff <= 1e-4


def test_whole_clip_parity_and_file_layouts(tmp_path):
    """moshi's non-streaming encode/decode vs ours, with the weights going through a
    safetensors file, in moshi's in-memory layout and in Kyutai's file layout."""
    cfg = MimiConfig.tiny()
    ref = build_reference(cfg, seed=1)
    sd = ref.state_dict()
    assert "encoder_transformer.transformer.layers.0.self_attn.in_projs.0.weight" in sd
    kyutai = {k.replace("in_projs.0.weight", "in_proj_weight").replace("out_projs.0.", "out_proj."): v
              for k, v in sd.items()}
    pcm = speech_like(12 * cfg.frame_size + 500, cfg.sample_rate, seed=12)
    with torch.inference_mode():
        c_ref = ref.encode(pcm)
        y_ref = ref.decode(c_ref)
    for layout, tensors in (("moshi", sd), ("kyutai", kyutai)):
        path = tmp_path / f"{layout}.safetensors"
        save_safetensors(tensors, path)
        ours = MimiCodec.from_kyutai(path, cfg)
        with torch.inference_mode():
            c = ours.encode(pcm)
            y = ours.decode(c_ref)
        assert c.shape == c_ref.shape == (1, 8, 13)
        assert (c == c_ref).float().mean() >= 0.99, layout
        assert (y - y_ref).abs().max() <= 1e-4, layout
