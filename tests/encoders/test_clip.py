"""CLIP and SigLIP towers from one local folder (encoders/clip.py): the folder's preprocessing, its own features,
SigLIP's full-length padding, a rebuild without the folder, every fusion, and the one-line mistakes."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.data.modalities import load_pretrained_tokenizer
from crossmodal_cli.encoders.clip import ClipImage, ClipText, folder_input_spec
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.factory import build_model
from crossmodal_cli.paths import config_dir
from crossmodal_cli.pipeline.inputs import image_input, pin_image_input
from crossmodal_cli.tasks.classification import Classification
from tests.conftest import settings_of

from clip_folders import tiny_folder


@pytest.fixture(scope="module", params=["clip", "siglip"])
def folder(request, tmp_path_factory):
    """(family, folder, the original model)."""
    path = tmp_path_factory.mktemp(request.param)
    return request.param, str(path), tiny_folder(path, request.param)


def towers(path: str, max_length: int = 16):
    tokenizer = load_pretrained_tokenizer(path, key="encoder.text.pretrained")
    image = ClipImage(pretrained=path).eval()
    text = ClipText(pretrained=path, vocab_size=len(tokenizer), max_length=max_length,
                    pad_token_id=tokenizer.pad_token_id).eval()
    return image, text, tokenizer


def test_the_folders_image_processor_sets_size_resize_and_normalisation(folder):
    family, path, _ = folder
    image, _, _ = towers(path)
    size, resize = folder_input_spec(path, "encoder.image.pretrained")
    assert size == 32 and resize == ("shorter_side_center_crop" if family == "clip" else "squash")
    mean = [0.48145466, 0.4578275, 0.40821073] if family == "clip" else [0.5, 0.4, 0.3]
    assert image.preprocess["mean"] == pytest.approx(mean)
    assert image.mean.flatten().tolist() == pytest.approx([m * 255 for m in mean])


@torch.no_grad()
def test_towers_give_the_models_own_joint_features(folder):
    """pooled @ projection.T is what CLIPModel/SiglipModel.get_image_features / get_text_features return."""
    family, path, model = folder
    image, text, tokenizer = towers(path)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean, std = image.mean / 255, image.std / 255
    expected = model.get_image_features(pixel_values=(pixels.float() / 255 - mean) / std)
    expected = getattr(expected, "pooler_output", expected)
    space = image.joint_space()
    assert torch.allclose(image(pixels).pooled @ space.projection.T, expected, atol=1e-5)
    texts = ["a photo of a red circle", "a dog", "the blue square with a triangle"]
    full = {"padding": "max_length", "max_length": 16} if family == "siglip" else {"padding": True}
    tokens = tokenizer(texts, return_tensors="pt", **full)
    args = {} if family == "siglip" else {"attention_mask": tokens.attention_mask}
    expected = model.get_text_features(input_ids=tokens.input_ids, **args)
    expected = getattr(expected, "pooler_output", expected)
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # the data pipeline pads to the longest text
    encoded = text({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
    assert torch.allclose(encoded.pooled @ text.joint_space().projection.T, expected, atol=1e-5)
    assert encoded.mask.sum(1).tolist() == batch.attention_mask.sum(1).tolist()
    assert space.loss == ("infonce" if family == "clip" else "sigmoid")
    assert space.logit_scale == pytest.approx(float(model.logit_scale))
    assert (space.logit_bias is None) == (family == "clip")


@torch.no_grad()
def test_a_text_alone_encodes_as_in_a_padded_batch(folder):
    """SigLIP attends to its padding: padded to the model's length, a text's embedding does not depend on the
    batch's longest text."""
    _, path, _ = folder
    _, text, tokenizer = towers(path)
    alone = tokenizer(["a dog"], return_tensors="pt")
    batch = tokenizer(["a dog", "a photo of the red circle and a blue square"], padding=True, return_tensors="pt")
    one = text({"input_ids": alone.input_ids, "attention_mask": alone.attention_mask}).pooled
    both = text({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}).pooled
    assert torch.allclose(one[0], both[0], atol=1e-5)


@torch.no_grad()
def test_the_architecture_rebuilds_both_towers_without_the_folder(folder, tmp_path):
    _, path, _ = folder
    image, text, tokenizer = towers(path)
    stored = {"image": json.loads(json.dumps(image.architecture())), "text": json.loads(json.dumps(text.architecture()))}
    image2 = ClipImage(pretrained=str(tmp_path / "gone"), architecture=stored["image"]).eval()
    text2 = ClipText(pretrained=str(tmp_path / "gone"), vocab_size=len(tokenizer), max_length=16,
                     pad_token_id=tokenizer.pad_token_id, architecture=stored["text"]).eval()
    image2.load_state_dict(image.state_dict())
    text2.load_state_dict(text.state_dict())
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(image2(pixels).pooled, image(pixels).pooled)
    tokens = dict(tokenizer(["a cat"], return_tensors="pt"))
    assert torch.equal(text2(tokens).pooled, text(tokens).pooled)
    assert image2.joint_space().logit_scale == image.joint_space().logit_scale
    assert image2.preprocess == image.preprocess


def test_another_image_size_interpolates_the_position_embeddings(folder):
    _, path, _ = folder
    image, _, _ = towers(path)
    assert image(torch.zeros(1, 3, 48, 48, dtype=torch.uint8)).tokens.shape[-1] == 32


def test_layer_groups_hold_every_parameter_once(folder):
    _, path, _ = folder
    image, text, _ = towers(path)
    for tower in (image, text):
        groups = tower.layer_groups()
        assert len(groups) == 4  # embeddings, 2 blocks, the rest
        assert sum(len(g) for g in groups) == len(list(tower.parameters()))


def test_mistakes_are_one_line(folder, tmp_path):
    _, path, _ = folder
    with pytest.raises(CrossmodalError, match=r"data.text.max_length=77: .* at most 16 tokens"):
        towers(path, max_length=77)
    with pytest.raises(CrossmodalError, match="encoder.image.pretrained=.*: not a local folder"):
        ClipImage(pretrained=str(tmp_path / "nothing"))
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(CrossmodalError, match="model type bert is not a CLIP or SigLIP model"):
        ClipImage(pretrained=str(tmp_path / "bert"))


def compose_clip(path: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return settings_of(compose("train", overrides=["encoder/image=clip", "encoder/text=clip",
                                                       f"encoder.image.pretrained={path}",
                                                       f"encoder.text.pretrained={path}", "data.text.max_length=16",
                                                       *overrides]))


@pytest.mark.parametrize("fusion", ["concat", "gated", "attention", "cross_attention", "late"])
def test_every_fusion_takes_both_towers(folder, fusion):
    family, path, _ = folder
    cfg = pin_image_input(compose_clip(path, f"fusion={fusion}", "modalities=[image,text]"))
    assert image_input(cfg) == (32, "shorter_side_center_crop" if family == "clip" else "squash")
    assert cfg.encoder.image["image_size"] == 32  # stored with the run: no folder needed to rebuild
    tokenizer = load_pretrained_tokenizer(path, key="encoder.text.pretrained")
    model = build_model(cfg, ["image", "text"], Classification.with_classes(3), tokenizer).eval()
    tokens = tokenizer(["a red circle", "a photo of a dog on the green square"], padding=True, return_tensors="pt",
                       return_token_type_ids=False)
    out = model({"image": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), "text": dict(tokens)})
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
