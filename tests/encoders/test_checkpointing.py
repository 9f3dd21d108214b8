"""Gradient checkpointing on every encoder family: the same gradients (and BatchNorm statistics) as without it, from
the same seed and batch; an encoder that cannot checkpoint is one line."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crossmodal_cli.encoders.base import Encoded, Encoder
from crossmodal_cli.encoders.checkpointing import enable_checkpointing
from crossmodal_cli.errors import CrossmodalError

from tests.encoders.conftest import tiny_wav2vec2
from tests.encoders.yaml_encoders import build


def tiny_bert_folder(folder) -> str:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(folder)
    return str(folder)


def image(size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def text() -> dict:
    ids = torch.randint(5, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def audio() -> torch.Tensor:
    return torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))


FAMILIES = {
    "tiny_cnn": lambda tmp: (build("image", "tiny_cnn", channels=[8, 16]), image()),
    "resnet": lambda tmp: (build("image", "resnet18"), image()),
    "torchvision_resnet": lambda tmp: (build("image", "torchvision", name="resnet18", image_size=32), image()),
    "torchvision_vit": lambda tmp: (build("image", "torchvision", name="vit_b_32", image_size=32), image()),
    "timm_vit": lambda tmp: (build("image", "timm", name="vit_tiny_patch16_224", image_size=224), image(224)),
    "bert": lambda tmp: (build("text", "tiny_bert", vocab_size=50, max_length=32, pad_token_id=0), text()),
    "hf_text": lambda tmp: (build("text", "hf", pretrained=tiny_bert_folder(tmp / "bert"), vocab_size=50,
                                  max_length=32, pad_token_id=0), text()),
    "mel_cnn": lambda tmp: (build("audio", "mel_cnn", sample_rate=8000, channels=[8, 16]), audio()),
    "hf_audio": lambda tmp: (tiny_wav2vec2(tmp / "w2v") and build("audio", "hf", pretrained=str(tmp / "w2v"),
                                                                 sample_rate=16000), audio()),
}


def step(encoder: Encoder, inputs) -> dict[str, torch.Tensor]:
    """One forward/backward in train mode from a fixed seed: {parameter name: gradient}."""
    torch.manual_seed(0)
    np.random.seed(0)  # wav2vec2 draws its SpecAugment masks with numpy
    encoder.train()
    encoded = encoder(inputs)
    (encoded.pooled.pow(2).mean() + encoded.tokens.mean()).backward()
    return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpointing_gives_the_same_gradients(family, tmp_path):
    if family == "timm_vit":
        pytest.importorskip("timm")
    torch.manual_seed(0)
    plain, inputs = FAMILIES[family](tmp_path)
    checkpointed = copy.deepcopy(plain)
    enable_checkpointing(checkpointed, "encoder.x.gradient_checkpointing")
    expected, got = step(plain, inputs), step(checkpointed, inputs)
    assert expected.keys() == got.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):  # BatchNorm updated once
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)
    assert list(plain.state_dict()) == list(checkpointed.state_dict())


def test_checkpointing_recomputes_instead_of_storing(tmp_path):
    """The checkpointed encoder keeps fewer tensors for the backward pass (saved-tensor hooks count them)."""
    plain, inputs = FAMILIES["tiny_cnn"](tmp_path)
    checkpointed = copy.deepcopy(plain)
    enable_checkpointing(checkpointed, "encoder.image.gradient_checkpointing")

    def saved_bytes(encoder) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            encoder.train()
            encoder(inputs).pooled.sum()
        return total

    assert saved_bytes(checkpointed) < saved_bytes(plain) / 2


class NoBlocks(Encoder):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.out_dim = 4

    def forward(self, x) -> Encoded:
        return Encoded(pooled=self.linear(x), tokens=self.linear(x)[:, None])


def test_an_encoder_that_cannot_checkpoint_is_one_line():
    with pytest.raises(CrossmodalError, match=r"^encoder.image.gradient_checkpointing=true: NoBlocks has no blocks "
                                              r"to checkpoint .*; set encoder.image.gradient_checkpointing=false$"):
        enable_checkpointing(NoBlocks(), "encoder.image.gradient_checkpointing")
