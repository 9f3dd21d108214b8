"""Low-rank adapters (peft) on every encoder family: the default target modules found by module type, only the
adapters train, they start as the identity, merge back into plain layers with the same outputs, and user mistakes
are one line naming the key."""
from __future__ import annotations

import copy
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from crossmodal_cli.encoders.adapters import add_adapters, default_targets, has_adapters, merge_adapters
from crossmodal_cli.encoders.base import Encoded, Encoder
from crossmodal_cli.errors import CrossmodalError

from tests.encoders.test_checkpointing import FAMILIES
from tests.encoders.yaml_encoders import yaml


def lora(**values) -> dict:
    """The YAML's lora node (configs/encoder/image/tiny_cnn.yaml: every encoder has the same) with `values`."""
    return {**OmegaConf.to_container(yaml("image", "tiny_cnn").lora), "r": 4, **values}


def suffixes(names: list[str]) -> set[str]:
    return {re.sub(r"^.*\.\d+\.", "", n) for n in names}


def test_every_encoder_yaml_has_adapters_off_by_default():
    for group, names in {"image": ("tiny_cnn", "resnet18", "timm", "torchvision"), "text": ("tiny_bert", "hf",
                         "bert_small"), "audio": ("mel_cnn", "hf")}.items():
        for name in names:
            node = yaml(group, name)
            assert node.lora.r == 0 and node.gradient_checkpointing is False and node.lora.method == "lora", name


@pytest.mark.parametrize("family,expected", [
    ("tiny_cnn", {"body.0", "body.4"}),
    ("mel_cnn", {"body.0", "body.4"}),
    ("bert", {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense"}),
    ("timm_vit", {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}),
    ("hf_audio", {"attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
                  "feed_forward.intermediate_dense", "feed_forward.output_dense"}),
])
def test_the_default_targets_by_family(family, expected, tmp_path):
    if family == "timm_vit":
        pytest.importorskip("timm")
    encoder = FAMILIES[family](tmp_path)[0]
    names = default_targets(encoder)
    if family in ("tiny_cnn", "mel_cnn"):
        assert set(names) == expected
    else:
        assert suffixes(names) == expected
        blocks = 12 if family == "timm_vit" else 2
        assert len(names) == blocks * len(expected)


def test_resnets_adapt_every_conv_and_torchvision_vits_their_block_linears(tmp_path):
    resnet = FAMILIES["resnet"](tmp_path)[0]
    assert default_targets(resnet) == [n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)]
    vit = FAMILIES["torchvision_vit"](tmp_path)[0]
    names = default_targets(vit)
    assert names and all(isinstance(vit.get_submodule(n), nn.Linear) for n in names)
    assert not any(n.endswith("self_attention.out_proj") for n in names)  # nn.MultiheadAttention reads it directly


class ClipLike(Encoder):
    """A stand-in for a CLIP/SigLIP tower encoder: a Hugging Face CLIPVisionModel inside an Encoder."""

    def __init__(self):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.model = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                      num_attention_heads=2, image_size=32, patch_size=8))
        self.out_dim = 32

    def forward(self, images):
        out = self.model(pixel_values=images.float() / 255)
        return Encoded(pooled=out.pooler_output, tokens=out.last_hidden_state)


def test_a_new_hugging_face_family_gets_its_block_projections_without_changes():
    assert suffixes(default_targets(ClipLike())) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                     "self_attn.out_proj", "mlp.fc1", "mlp.fc2"}


CASES = [("tiny_cnn", "lora"), ("tiny_cnn", "loha"), ("tiny_cnn", "lokr"), ("bert", "lora"), ("bert", "loha"),
         ("bert", "lokr"), ("hf_audio", "lora"), ("mel_cnn", "lora")]


@pytest.mark.parametrize("family,method", CASES)
def test_only_adapters_train_they_start_as_the_identity_and_merge_into_the_same_function(family, method, tmp_path):
    torch.manual_seed(0)
    encoder, inputs = FAMILIES[family](tmp_path)
    encoder.eval()
    with torch.no_grad():
        before = encoder(inputs).pooled
    add_adapters(encoder, lora(method=method), "encoder.x.lora")
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(re.search(r"\.(lora_|hada_|lokr_)", n) for n in trainable)
    total = sum(p.numel() for p in encoder.parameters())
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) < 0.5 * total
    with torch.no_grad():
        torch.testing.assert_close(encoder(inputs).pooled, before)  # the identity at the start
        for p in encoder.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)  # as if trained
        adapted = encoder(inputs).pooled
    assert not torch.allclose(adapted, before, atol=1e-4)
    merged = copy.deepcopy(encoder)
    assert merge_adapters(merged) > 0 and not has_adapters(merged)
    with torch.no_grad():
        torch.testing.assert_close(merged(inputs).pooled, adapted, atol=1e-5, rtol=1e-4)


def test_adapters_get_gradients_and_the_base_weights_none(tmp_path):
    encoder, inputs = FAMILIES["bert"](tmp_path)
    add_adapters(encoder, lora(), "encoder.text.lora")
    encoder.train()
    encoder(inputs).pooled.pow(2).sum().backward()
    for name, p in encoder.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_target_modules_by_suffix_and_by_regex(tmp_path):
    encoder = FAMILIES["bert"](tmp_path)[0]
    add_adapters(encoder, lora(target_modules=["query", "value"]), "encoder.text.lora")
    assert {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if hasattr(m, "lora_A")} == {"query", "value"}
    encoder = FAMILIES["bert"](tmp_path)[0]
    add_adapters(encoder, lora(target_modules=r".*layer\.1\..*\.key"), "encoder.text.lora")
    assert [n for n, m in encoder.named_modules() if hasattr(m, "lora_A")] == ["bert.encoder.layer.1.attention.self.key"]


def test_target_modules_matching_nothing_is_one_line_listing_modules(tmp_path):
    encoder = FAMILIES["tiny_cnn"](tmp_path)[0]
    with pytest.raises(CrossmodalError, match=r"^encoder.image.lora.target_modules=\[foo\]: matches no module of "
                                              r"TinyCNN; modules found: body.0, body.1, body.4, body.5 \(4 in all\)$"):
        add_adapters(encoder, lora(target_modules=["foo"]), "encoder.image.lora")


def test_a_module_peft_cannot_adapt_is_one_line(tmp_path):
    encoder = FAMILIES["tiny_cnn"](tmp_path)[0]
    with pytest.raises(CrossmodalError, match=r"^encoder.image.lora.target_modules=\[body.1\]: lora cannot adapt "
                                              r"a module of TinyCNN \(.*\); name nn.Linear or nn.Conv2d layers$"):
        add_adapters(encoder, lora(target_modules=["body.1"]), "encoder.image.lora")  # a BatchNorm2d


def test_an_unknown_method_is_one_line(tmp_path):
    with pytest.raises(CrossmodalError, match=r"^encoder.image.lora.method=adalora: use one of lora, loha, lokr$"):
        add_adapters(FAMILIES["tiny_cnn"](tmp_path)[0], lora(method="adalora"), "encoder.image.lora")
