"""Image encoders. Input: uint8 [B, 3, H, W]; normalised here, on the model's device.

Output: Encoded(pooled [B, D], tokens [B, T, D]): T = the positions of the last feature map (h*w) for CNNs, the
token sequence for transformers.
"""
from __future__ import annotations

import difflib
from typing import Sequence

import torch
import torchvision
from torch import nn

from crossmodal_cli.encoders.base import Encoded, Encoder, stem_blocks_rest
from crossmodal_cli.encoders.checkpointing import recompute_blocks, run_blocks
from crossmodal_cli.encoders.weights import load_state, read_state_dict
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


class TinyCNN(Encoder):
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
        self.checkpointing = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each conv block's activations in the backward pass (encoders/checkpointing.py)."""
        self.checkpointing = True

    def forward(self, images: torch.Tensor) -> Encoded:
        active = self.checkpointing and self.training and torch.is_grad_enabled()
        return _grid_to_encoded(run_blocks(self.body, self.normalise(images), 4, active))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """One group per conv block (conv + batch norm), input to output."""
        return [list(self.body[i:i + 4].parameters()) for i in range(0, len(self.body), 4)]


class ResNet(Encoder):
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

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each residual block's activations in the backward pass (encoders/checkpointing.py)."""
        recompute_blocks(block for layer in self.body[4:] for block in layer)

    def forward(self, images: torch.Tensor) -> Encoded:
        return _grid_to_encoded(self.body(self.normalise(images)))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[stem conv + bn, layer1, layer2, layer3, layer4]."""
        return stem_blocks_rest(self, self.body[4:])


# ---- pretrained trunks from a local weights file ----------------------------------------------------------------

RESIZE_MODES = ("shorter_side_center_crop", "squash")  # how the data pipeline fits an image to image_size

# torchvision families: (name prefixes, module whose output holds the tokens, its layout, the layer groups: the
# children of one module, or a tuple of modules)
_TORCHVISION_FAMILIES = (
    (("resnet", "resnext", "wide_resnet"), "layer4", "BCHW", ("layer1", "layer2", "layer3", "layer4")),
    (("regnet_",), "trunk_output", "BCHW", "trunk_output"),
    (("efficientnet_", "mobilenet_", "convnext_", "densenet", "vgg", "alexnet"), "features", "BCHW", "features"),
    (("mnasnet",), "layers", "BCHW", "layers"),
    (("vit_",), "encoder", "BTD", "encoder.layers"),
    (("swin_",), "norm", "BHWC", "features"),
)


def _to_tokens(features: torch.Tensor, layout: str, pooled: torch.Tensor) -> torch.Tensor:
    """The last feature map or token sequence as [B, T, D]; a model whose head changes the width (mobilenet_v3,
    vgg, alexnet: an MLP after pooling) gives one token, its pooled vector [B, 1, D]."""
    if layout == "BCHW":
        features = features.flatten(2).transpose(1, 2)
    elif layout == "BHWC":
        features = features.flatten(1, 2)
    return features if features.shape[-1] == pooled.shape[-1] else pooled.unsqueeze(1)


def _check_input_spec(image_size: int, resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise CrossmodalError(f"encoder.image.resize={resize}: use {' or '.join(RESIZE_MODES)}")
    if image_size < 16:
        raise CrossmodalError(f"encoder.image.image_size={image_size}: must be >= 16 pixels")


class TorchvisionImage(Encoder):
    """A torchvision classification model (`torchvision.models.get_model(name)`) without its classifier layer.

    pooled = what the classifier layer saw [B, D]; tokens = the last feature map's positions [B, h*w, D] (CNNs),
    the token sequence [B, T, D] (ViT: class token first; Swin: its window grid). Weights: a local state-dict
    file (the full classification model's is fine: the classifier's keys are dropped), or random with null.
    `image_size` and `resize` are the input spec the data pipeline follows (a ViT is built for image_size and
    must match its weights'). `architecture`: any dict builds the same model with random weights and reads no
    file (`architecture()` is None: `name` and image_size say everything).
    """

    def __init__(self, *, name: str, weights: str | None, mean: Sequence[float], std: Sequence[float],
                 image_size: int, resize: str, architecture: dict | None = None):
        super().__init__()
        _check_input_spec(image_size, resize)
        family = _torchvision_family(name)
        vit_patch = int(name.rsplit("_", 1)[1]) if name.startswith("vit_") else None  # vit_b_16: 16 px patches
        if vit_patch and image_size % vit_patch:
            raise CrossmodalError(f"encoder.image.image_size={image_size}: {name} needs a multiple of {vit_patch}")
        net = torchvision.models.get_model(name, weights=None, **({"image_size": image_size} if vit_patch else {}))
        self.head_name = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]  # the classifier layer
        self.out_dim = net.get_submodule(self.head_name).in_features
        net.set_submodule(self.head_name, nn.Identity())
        self.normalise = _Normalise(mean, std)
        self.model = net
        self.name, self.image_size, self.resize = name, image_size, resize
        _, self.token_module, self.layout, self.block_spec = family
        state = read_state_dict(weights, "encoder.image.weights") if weights and architecture is None else None
        if state is not None:
            if vit_patch:
                _check_vit_size(state, net, image_size, vit_patch)
            load_state(self.model, state, f"encoder.image.weights={weights}", name, drop=[self.head_name])

    def forward(self, images: torch.Tensor) -> Encoded:
        captured: list[torch.Tensor] = []
        hook = self.model.get_submodule(self.token_module).register_forward_hook(
            lambda module, args, output: captured.append(output))
        try:
            pooled = self.model(self.normalise(images))  # [B, D]
        finally:
            hook.remove()
        return Encoded(pooled=pooled, tokens=_to_tokens(captured[-1], self.layout, pooled))

    def _blocks(self) -> list[nn.Module]:
        spec = self.block_spec
        return list(self.model.get_submodule(spec).children()) if isinstance(spec, str) else \
            [self.model.get_submodule(path) for path in spec]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[stem, stage (or transformer block) 1, …, n, the rest (final norm, pre-logits layers)]."""
        return stem_blocks_rest(self, self._blocks())

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the activations of each block (a ResNet's residual blocks, a ViT's encoder layers, the stages
        of the other families) in the backward pass (encoders/checkpointing.py); the token hook sits above them."""
        stages = self._blocks()
        recompute_blocks(stages if isinstance(self.block_spec, str) else [b for s in stages for b in s.children()])


def _check_vit_size(state: dict[str, torch.Tensor], net: nn.Module, image_size: int, patch: int) -> None:
    """A ViT's position embeddings fix the image size its weights take: one line when image_size differs."""
    stored = state.get("encoder.pos_embedding")
    if stored is not None and stored.shape != net.encoder.pos_embedding.shape:
        trained = round((stored.shape[1] - 1) ** 0.5) * patch
        raise CrossmodalError(f"encoder.image.image_size={image_size}: these weights were trained on {trained} px "
                              f"images (their position embeddings); set encoder.image.image_size={trained}")


def _torchvision_family(name: str) -> tuple:
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise CrossmodalError(f"encoder.image.name={name}: not a torchvision classification model; {hint}e.g. "
                              f"resnet50, efficientnet_b0, convnext_tiny, vit_b_16, swin_t")
    for family in _TORCHVISION_FAMILIES:
        if name.startswith(family[0]):
            return family
    supported = ", ".join(f"{p}*" for family in _TORCHVISION_FAMILIES for p in family[0])
    raise CrossmodalError(f"encoder.image.name={name}: not supported by encoder/image=torchvision (supported: "
                          f"{supported}); encoder/image=timm may have it")


class TimmImage(Encoder):
    """A timm model (`timm.create_model(name, num_classes=0)`: no classifier), timm being an optional extra.

    pooled = `forward_head(pre_logits=True)` [B, D]; tokens = `forward_features` as [B, T, D] (a CNN's grid
    positions, a ViT's tokens with its class token, Swin's windows grid). Weights: a local state-dict file in
    timm's naming (a classification model's is fine: its classifier keys are dropped), or random with null.
    `image_size`/`resize`: the input spec, as for TorchvisionImage; `architecture`: any dict means random
    weights, no file read (`architecture()` is None: `name` says everything).
    """

    def __init__(self, *, name: str, weights: str | None, mean: Sequence[float], std: Sequence[float],
                 image_size: int, resize: str, architecture: dict | None = None):
        super().__init__()
        _check_input_spec(image_size, resize)
        try:
            import timm
        except ImportError:
            raise CrossmodalError("encoder/image=timm needs timm: pip install 'crossmodal[timm]'") from None
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise CrossmodalError(f"encoder.image.name={name}: not a timm model; "
                                  f"{'did you mean ' + ', '.join(close) + '? ' if close else ''}"
                                  f"e.g. resnet50, convnext_tiny, vit_base_patch16_224 (timm.list_models())")
        model = timm.create_model(name, pretrained=False, num_classes=0)
        patch = getattr(model, "patch_embed", None)
        fixed = getattr(patch, "strict_img_size", False) and not getattr(model, "dynamic_img_size", False)
        if fixed and tuple(patch.img_size) != (image_size, image_size):
            raise CrossmodalError(f"encoder.image.image_size={image_size}: {name} takes {patch.img_size[0]} px "
                                  f"images (the size it was built for); set encoder.image.image_size="
                                  f"{patch.img_size[0]}")
        self.normalise = _Normalise(mean, std)
        self.model = model
        self.name, self.image_size, self.resize = name, image_size, resize
        self.out_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.layout = "BHWC" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "BCHW"
        state = read_state_dict(weights, "encoder.image.weights") if weights and architecture is None else None
        if state is not None:
            head = model.pretrained_cfg.get("classifier") or ()
            load_state(self.model, state, f"encoder.image.weights={weights}", name,
                       drop=[head] if isinstance(head, str) else head)

    def forward(self, images: torch.Tensor) -> Encoded:
        features = self.model.forward_features(self.normalise(images))  # [B, C, h, w], [B, h, w, C] or [B, T, D]
        pooled = self.model.forward_head(features, pre_logits=True)     # [B, D]
        layout = self.layout if features.ndim == 4 else "BTD"
        return Encoded(pooled=pooled, tokens=_to_tokens(features, layout, pooled))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """timm's own grouping (`group_matcher(coarse=False)`, as its layer-decay uses): stem, blocks, rest."""
        from timm.models import group_parameters

        try:
            groups = group_parameters(self.model, self.model.group_matcher(coarse=False))
        except (AttributeError, RuntimeError):  # no group_matcher (or one that refuses): its top-level modules
            return stem_blocks_rest(self, self.model.children())
        params = dict(self.model.named_parameters())
        return [[params[n] for n in groups[i]] for i in sorted(groups) if groups[i]]
