"""Image encoders. Input: uint8 [B, 3, H, W]; normalised here, on the model's device.

Output: Encoded(pooled [B, D], tokens [B, h*w, D]) where tokens are the positions of the last feature map.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.errors import CrossmodalError


class _Normalise(nn.Module):
    """uint8 [B, 3, H, W] -> float [B, 3, H, W] with per-channel mean/std of [0, 1] pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std


def _grid_to_encoded(features: torch.Tensor) -> Encoded:
    tokens = features.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]
    return Encoded(pooled=tokens.mean(dim=1), tokens=tokens)


class TinyCNN(nn.Module):
    """Conv-BN-ReLU blocks, each halving the resolution; for CPU runs and tests."""

    def __init__(self, channels: Sequence[int], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalise = _Normalise(mean, std)
        layers, c_in = [], 3
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, images: torch.Tensor) -> Encoded:
        return _grid_to_encoded(self.body(self.normalise(images)))


class ResNet(nn.Module):
    """A torchvision ResNet trunk (random init) without its pooling and classifier."""

    def __init__(self, arch: str, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if not arch.startswith("resnet") or not hasattr(torchvision.models, arch):
            raise CrossmodalError(f"encoder.image.arch={arch}: not a torchvision ResNet (e.g. resnet18, resnet50)")
        net = getattr(torchvision.models, arch)(weights=None)
        self.normalise = _Normalise(mean, std)
        self.out_dim = net.fc.in_features
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                  net.layer4)

    def forward(self, images: torch.Tensor) -> Encoded:
        return _grid_to_encoded(self.body(self.normalise(images)))
