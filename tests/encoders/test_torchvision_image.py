"""TorchvisionImage: a torchvision classification model minus its classifier, weights from a local file."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from crossmodal_cli.encoders.image import TorchvisionImage
from crossmodal_cli.errors import CrossmodalError

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build(name: str = "resnet18", weights: str | None = None, **overrides) -> TorchvisionImage:
    values = dict(name=name, weights=weights, mean=MEAN, std=STD, image_size=224, resize="shorter_side_center_crop")
    return TorchvisionImage(**{**values, **overrides}).eval()


def images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory):
    """A resnet18 with non-default weights (fc included), saved as .pth and .safetensors; (model, pth, st)."""
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # move the batch-norm statistics off their defaults, so loading them is checked too
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("resnet18")
    torch.save(net.state_dict(), folder / "resnet18.pth")
    save_file(net.state_dict(), str(folder / "resnet18.safetensors"))
    return net, str(folder / "resnet18.pth"), str(folder / "resnet18.safetensors")


def reference_trunk(net, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The original model's layer4 map [B, C, h, w] and its pooled features [B, C] (what fc sees)."""
    x = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    for layer in (net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
    return x, torch.flatten(net.avgpool(x), 1)


@pytest.mark.parametrize("which", [1, 2], ids=["pth", "safetensors"])
def test_full_classification_state_dict_loads_and_gives_the_original_trunk(resnet18_files, which):
    net, path = resnet18_files[0], resnet18_files[which]
    encoder = build(weights=path)
    x = images()
    with torch.no_grad():
        grid, pooled = reference_trunk(net, x)
        out = encoder(x)
    assert encoder.out_dim == 512 and out.mask is None
    assert torch.allclose(out.pooled, pooled, atol=1e-5)
    assert out.tokens.shape == (2, 4, 512)
    assert torch.allclose(out.tokens, grid.flatten(2).transpose(1, 2), atol=1e-5)
    assert not any(k.startswith("model.fc.") for k in encoder.state_dict())  # the classifier is gone


def test_a_wrapped_ddp_state_dict_loads_too(resnet18_files, tmp_path):
    net = resnet18_files[0]
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3},
               tmp_path / "ckpt.pth")
    encoder = build(weights=str(tmp_path / "ckpt.pth"))
    assert torch.equal(encoder.model.conv1.weight, net.conv1.weight)


def test_keys_that_do_not_fit_are_one_line_naming_the_count_and_a_few(resnet18_files, tmp_path):
    state = dict(resnet18_files[0].state_dict())
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CrossmodalError) as err:
        build(weights=str(tmp_path / "bad.pth"))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"encoder.image.weights={tmp_path / 'bad.pth'}: does not fit")
    assert "1 missing keys (layer4.1.bn2.weight)" in message and "1 unexpected keys (extra.weight)" in message


def test_weights_of_another_model_are_refused(resnet18_files):
    with pytest.raises(CrossmodalError, match=r"does not fit resnet34: \d+ missing keys .*layer1\.2\."):
        build("resnet34", weights=resnet18_files[1])


def test_missing_or_unreadable_weight_files_are_one_line(tmp_path):
    with pytest.raises(CrossmodalError, match="no such file"):
        build(weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CrossmodalError, match="cannot read it as a state dict"):
        build(weights=str(tmp_path / "junk.pth"))
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "whole_model.pth")  # a pickled module
    with pytest.raises(CrossmodalError, match="cannot read it as a state dict"):
        build(weights=str(tmp_path / "whole_model.pth"))


def test_architecture_round_trip_reads_no_file(resnet18_files):
    encoder = build(weights=resnet18_files[1])
    assert encoder.architecture() is None
    rebuilt = build(weights="/gone/resnet18.pth", architecture={})
    rebuilt.load_state_dict(encoder.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.equal(rebuilt(x).pooled, encoder(x).pooled)


def test_vit_tokens_are_the_sequence_with_its_class_token(tmp_path):
    encoder = build("vit_b_16")
    with torch.no_grad():
        out = encoder(images(batch=1, size=224))
    assert encoder.out_dim == 768 and out.pooled.shape == (1, 768) and out.tokens.shape == (1, 197, 768)
    assert torch.equal(out.pooled, out.tokens[:, 0])  # the classifier sees the class token after the final norm
    # weights trained on 224 px images (14 x 14 patches + class token) for a ViT built for 384 px
    torch.save({"encoder.pos_embedding": encoder.model.encoder.pos_embedding.detach()}, tmp_path / "vit.pth")
    with pytest.raises(CrossmodalError, match="image_size=384: these weights were trained on 224 px images.*"
                                              "set encoder.image.image_size=224"):
        build("vit_b_16", weights=str(tmp_path / "vit.pth"), image_size=384)
    with pytest.raises(CrossmodalError, match="image_size=200: vit_b_16 needs a multiple of 16"):
        build("vit_b_16", image_size=200)


@pytest.mark.parametrize("name, dim", [("efficientnet_b0", 1280), ("convnext_tiny", 768), ("swin_t", 768),
                                       ("regnet_y_400mf", 440)])
def test_cnn_and_swin_pooled_and_grid_tokens(name, dim):
    encoder = build(name)
    with torch.no_grad():
        out = encoder(images())
    assert encoder.out_dim == dim and out.pooled.shape == (2, dim) and out.tokens.shape == (2, 4, dim)


def test_a_head_that_changes_the_width_gives_one_token():
    encoder = build("mobilenet_v3_small")  # 576-channel map, then Linear(576, 1024) + hardswish before the classifier
    with torch.no_grad():
        out = encoder(images())
    assert encoder.out_dim == 1024 and out.tokens.shape == (2, 1, 1024) and torch.equal(out.tokens[:, 0], out.pooled)


def test_names_and_input_spec_errors_are_one_line():
    with pytest.raises(CrossmodalError, match="name=resnet05: not a torchvision classification model; did you mean"):
        build("resnet05")
    with pytest.raises(CrossmodalError, match="name=googlenet: not supported by encoder/image=torchvision"):
        build("googlenet")
    with pytest.raises(CrossmodalError, match="resize=stretch: use shorter_side_center_crop or squash"):
        build(resize="stretch")


def test_input_spec_is_stored_for_the_data_pipeline():
    encoder = build(image_size=192, resize="squash")
    assert (encoder.image_size, encoder.resize) == (192, "squash")
