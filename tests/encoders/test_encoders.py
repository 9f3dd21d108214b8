"""Each encoder's output shapes, masks and widths, from its real config."""
from __future__ import annotations

import pytest
import torch

from crossmodal_cli.errors import CrossmodalError
from yaml_encoders import build


@pytest.mark.parametrize("name, size, dim, grid", [("tiny_cnn", 32, 128, 4), ("resnet18", 64, 512, 4)])
def test_image_encoders_take_uint8_and_give_pooled_and_grid_tokens(name, size, dim, grid):
    encoder = build("image", name)
    out = encoder(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    assert encoder.out_dim == dim
    assert out.pooled.shape == (2, dim) and out.tokens.shape == (2, grid, dim) and out.mask is None
    assert torch.allclose(out.pooled, out.tokens.mean(1))


def test_resnet_rejects_unknown_architectures():
    with pytest.raises(CrossmodalError, match="not a torchvision ResNet"):
        build("image", "resnet18", arch="vgg16")


@pytest.mark.parametrize("name, dim", [("tiny_bert", 64), ("bert_small", 512)])
def test_text_encoder_masks_padding(name, dim):
    encoder = build("text", name, vocab_size=50, max_length=16, pad_token_id=0).eval()
    ids = torch.tensor([[2, 7, 8, 3, 0, 0], [2, 9, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    out = encoder({"input_ids": ids, "attention_mask": mask})
    assert out.pooled.shape == (2, dim) and out.tokens.shape == (2, 6, dim)
    assert out.mask.dtype == torch.bool and out.mask.sum().item() == 7
    changed = ids.clone()
    changed[0, 4:] = 11  # different ids under the padding mask
    again = encoder({"input_ids": changed, "attention_mask": mask})
    assert torch.allclose(out.pooled, again.pooled, atol=1e-5)


def test_text_encoder_config_errors():
    with pytest.raises(CrossmodalError, match="divisible by num_heads"):
        build("text", "tiny_bert", vocab_size=50, max_length=16, num_heads=3)


def test_audio_encoder_gives_time_tokens_in_fp32_under_autocast():
    encoder = build("audio", "mel_cnn", sample_rate=8000)
    wave = torch.randn(2, 4000)
    out = encoder(wave)
    assert encoder.out_dim == 64 and out.pooled.shape == (2, 64) and out.tokens.shape[0] == 2
    assert out.tokens.shape[1] == 7  # 51 mel frames halved three times (ceil)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder.log_mel(wave).dtype == torch.float32
