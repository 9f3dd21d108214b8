"""TimmImage: a timm model with num_classes=0, weights from a local file; timm is an optional extra."""
from __future__ import annotations

import builtins

import pytest
import torch

from crossmodal_cli.encoders.image import TimmImage
from crossmodal_cli.errors import CrossmodalError

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build(name: str = "resnet18", weights: str | None = None, **overrides) -> TimmImage:
    values = dict(name=name, weights=weights, mean=MEAN, std=STD, image_size=224, resize="shorter_side_center_crop")
    return TimmImage(**{**values, **overrides}).eval()


def images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_classification_weights_load_and_give_the_original_features(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()  # with its classifier "fc"
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    encoder = build(weights=str(tmp_path / "resnet18.pth"))
    x = images()
    with torch.no_grad():
        features = net.forward_features(normalised(x))
        out = encoder(x)
    assert encoder.out_dim == 512
    assert torch.allclose(out.pooled, net.forward_head(features, pre_logits=True), atol=1e-5)
    assert torch.allclose(out.tokens, features.flatten(2).transpose(1, 2), atol=1e-5)


def test_vit_tokens_include_the_class_token_and_size_is_checked():
    pytest.importorskip("timm")
    encoder = build("vit_tiny_patch16_224")
    with torch.no_grad():
        out = encoder(images(batch=1, size=224))
    assert encoder.out_dim == 192 and out.pooled.shape == (1, 192) and out.tokens.shape == (1, 197, 192)
    with pytest.raises(CrossmodalError, match="image_size=256: vit_tiny_patch16_224 takes 224 px images"):
        build("vit_tiny_patch16_224", image_size=256)


def test_channels_last_swin_features_become_grid_tokens():
    pytest.importorskip("timm")
    encoder = build("swin_tiny_patch4_window7_224")
    with torch.no_grad():
        out = encoder(images(batch=1, size=224))
    assert out.pooled.shape == (1, 768) and out.tokens.shape == (1, 49, 768)
    assert torch.allclose(out.pooled, out.tokens.mean(1), atol=1e-4)  # timm pools the normed grid by its mean


def test_architecture_round_trip_reads_no_file():
    pytest.importorskip("timm")
    encoder = build("resnet18")
    assert encoder.architecture() is None
    rebuilt = build("resnet18", weights="/gone/resnet18.pth", architecture={})
    rebuilt.load_state_dict(encoder.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.equal(rebuilt(x).pooled, encoder(x).pooled)


def test_unknown_names_and_wrong_weights_are_one_line(tmp_path):
    pytest.importorskip("timm")
    with pytest.raises(CrossmodalError, match="name=resnet05: not a timm model; did you mean"):
        build("resnet05")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CrossmodalError, match=r"does not fit resnet18: \d+ missing keys .*; 1 wrongly shaped keys "
                                              r"\(conv1\.weight\)"):
        build(weights=str(tmp_path / "bad.pth"))


def test_without_timm_the_message_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(CrossmodalError) as err:
        build()
    assert str(err.value) == "encoder/image=timm needs timm: pip install 'crossmodal[timm]'"
