"""The two towers of a contrastive image-text model (CLIP, SigLIP) from one local Hugging Face folder.

The folder is what `CLIPModel` / `SiglipModel.save_pretrained` writes, with the processor's files beside it
(preprocessor_config.json, the tokenizer). `ClipImage` is its vision tower, `ClipText` its text tower; each one
loads the whole model (`AutoModel`, local files only) and keeps its own half.

    ClipImage: uint8 [B, 3, H, W] -> Encoded(pooled [B, D_v], tokens [B, 1 + patches, D_v])
    ClipText:  {"input_ids", "attention_mask"} [B, T] -> Encoded(pooled [B, D_t], tokens [B, T, D_t], mask [B, T])

pooled is the tower's own pooled output before the joint projection (CLIP: the post-layernorm class token or end-
of-text token; SigLIP: the attention-pooling head's output or the last token through its head, which already lie
in the joint space). `joint_space()` gives what a task needs to compare images with texts as the checkpoint
does: the projection into the joint space (CLIP's visual_projection / text_projection; identity for SigLIP), the
trained temperature (logit_scale) and bias (SigLIP's logit_bias), and the loss the model was trained with.

Preprocessing is the folder's: the image size, the resize (center crop or not) and mean/std come from its
preprocessor_config.json (`folder_input_spec`: the data pipeline fits images to it; the mean/std apply here, on the
model's device); texts use the folder's tokenizer (pipeline/inputs.build_tokenizer). SigLIP was trained on texts
padded to its full length with no attention mask, so ClipText pads every batch to max_position_embeddings with the
pad token and attends to all positions (the returned mask still marks the real tokens, for attention fusions).

`architecture()` holds the model's config, the preprocessing and the temperature as plain values, so a checkpoint
rebuilds the tower without the folder (`architecture=` then builds random weights and reads no file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crossmodal_cli.encoders.base import Encoded, Encoder, stem_blocks_rest
from crossmodal_cli.encoders.weights import config_dict, folder_and_config, hf_folder, hf_model, on_meta_device
from crossmodal_cli.errors import CrossmodalError

FAMILIES = {"clip": "infonce", "siglip": "sigmoid"}  # supported model_type -> the loss it was trained with


@dataclass(frozen=True)
class JointSpace:
    """How a tower's pooled output [B, D] reaches the model's joint image-text space, and how it was trained.

    projection: [E, D] (embedding = pooled @ projection.T, then L2-normalised); logit_scale: log of the trained
    inverse temperature; logit_bias: SigLIP's sigmoid bias (None for CLIP); loss: infonce | sigmoid; model: the
    model's config (two towers compare only when it is the same model)."""

    projection: torch.Tensor
    logit_scale: float
    logit_bias: float | None
    loss: str
    model: dict


def folder_input_spec(pretrained: str, key: str) -> tuple[int, str]:
    """(image size, resize mode) of the folder's image processor: CLIP resizes the shorter side and center-crops
    (shorter_side_center_crop), SigLIP resizes to a square (squash)."""
    return _image_processing(hf_folder(pretrained, key), key)[:2]


def _image_processing(folder: Path, key: str) -> tuple[int, str, list[float], list[float]]:
    """(size, resize, mean, std) from preprocessor_config.json; one line when it is missing or not an image one."""
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        raise CrossmodalError(f"{key}={folder}: no preprocessor_config.json (the image processor) in that folder; "
                              f"save the model's processor there too (processor.save_pretrained)")
    values = json.loads(file.read_text())
    if "image_mean" not in values:
        raise CrossmodalError(f"{key}={folder}: preprocessor_config.json holds no image processor (image_mean)")
    crop = values.get("do_center_crop") and values.get("crop_size")
    size = crop or values.get("size") or {}
    side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
    if not side:
        raise CrossmodalError(f"{key}={folder}: preprocessor_config.json gives no image size (size / crop_size)")
    mean, std = list(values["image_mean"]), list(values["image_std"])
    if not values.get("do_normalize", True):
        mean, std = [0.0] * 3, [1.0] * 3
    return int(side), "shorter_side_center_crop" if crop else "squash", mean, std


def _load(pretrained: str, architecture: dict | None, key: str, with_images: bool):
    """(the whole CLIPModel / SiglipModel, its family, the stored-or-read preprocessing, logit scale, bias)."""
    folder, architecture, config = folder_and_config(pretrained, architecture, key)
    if config.model_type not in FAMILIES:
        raise CrossmodalError(f"{key}={pretrained}: model type {config.model_type} is not a CLIP or SigLIP model "
                              f"(supported: {', '.join(FAMILIES)}); use encoder/image=timm or encoder/text=hf")
    preprocess = None
    if with_images:
        preprocess = architecture["preprocess"] if architecture is not None else \
            dict(zip(("image_size", "resize", "mean", "std"), _image_processing(folder, key)))
    model = hf_model(folder, config, key)
    if architecture is not None:
        scale, bias = architecture["logit_scale"], architecture["logit_bias"]
    elif on_meta_device():
        scale, bias = 0.0, None
    else:
        scale = float(model.logit_scale.detach())
        bias = float(model.logit_bias.detach()) if getattr(model, "logit_bias", None) is not None else None
    return model, config.model_type, preprocess, scale, bias


class _JointTower(Encoder):
    """What both towers share: the joint space, the architecture, the layer groups."""

    model: nn.Module
    projection: torch.Tensor

    def _keep(self, full: nn.Module, family: str, scale: float, bias: float | None, projection: str,
              width: int) -> None:
        """The family, temperature and config; the joint projection [E, D] as a buffer (CLIP's linear layer,
        SigLIP: identity), so no parameter sits unused in the forward pass (DDP) and a task copies it."""
        self.family, self.logit_scale, self.logit_bias = family, scale, bias
        self.model_config = config_dict(full.config)
        weight = getattr(full, projection).weight.detach().clone() if family == "clip" else torch.eye(width)
        self.register_buffer("projection", weight)

    def joint_space(self) -> JointSpace:
        """The projection [E, D] (a copy), the trained temperature and bias, the loss, the model's config."""
        return JointSpace(self.projection.detach().float().cpu().clone(), self.logit_scale, self.logit_bias,
                          FAMILIES[self.family], self.model_config)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings, transformer block 1, …, block n, the rest (final norm, pooling head, projection)]."""
        return stem_blocks_rest(self, self.model.encoder.layers)

    def _architecture(self, **extra) -> dict:
        return {"model": self.model_config, "logit_scale": self.logit_scale, "logit_bias": self.logit_bias, **extra}


class ClipImage(_JointTower):
    """The vision tower of a CLIP / SigLIP folder. uint8 [B, 3, S, S] -> pooled [B, D_v], tokens [B, T, D_v].

    Images reach it at the folder's size (`folder_input_spec`); another size (data.image_size) is accepted by
    interpolating the position embeddings, as transformers' `interpolate_pos_encoding` does."""

    def __init__(self, *, pretrained: str, architecture: dict | None = None):
        super().__init__()
        full, family, preprocess, scale, bias = _load(pretrained, architecture, "encoder.image.pretrained", True)
        self._keep(full, family, scale, bias, "visual_projection", full.config.vision_config.hidden_size)
        self.model = full.vision_model
        self.preprocess = dict(preprocess)
        self.register_buffer("mean", torch.tensor(preprocess["mean"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(preprocess["std"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.trained_size = int(full.config.vision_config.image_size)
        self.out_dim = int(full.config.vision_config.hidden_size)

    def forward(self, images: torch.Tensor) -> Encoded:
        pixels = (images.float() - self.mean) / self.std
        out = self.model(pixel_values=pixels, interpolate_pos_encoding=images.shape[-1] != self.trained_size)
        return Encoded(pooled=out.pooler_output, tokens=out.last_hidden_state)

    def architecture(self) -> dict:
        """{"model": config.to_dict(), "preprocess": {image_size, resize, mean, std}, "logit_scale", "logit_bias"}."""
        return self._architecture(preprocess=self.preprocess)


class ClipText(_JointTower):
    """The text tower of a CLIP / SigLIP folder. {"input_ids", "attention_mask"} [B, T] -> pooled [B, D_t],
    tokens [B, T', D_t], mask [B, T'] (True on real tokens).

    CLIP attends to the real tokens (causal, with the attention mask) and pools its end-of-text token. SigLIP pads
    to max_position_embeddings (T' = that length) with `pad_token_id` and attends to every position, as it was
    trained; it pools the last position. `vocab_size`/`max_length`/`pad_token_id` come from the tokenizer and
    data.text.max_length at run time and are checked against the model."""

    def __init__(self, *, pretrained: str, vocab_size: int, max_length: int, pad_token_id: int,
                 architecture: dict | None = None):
        super().__init__()
        key = "encoder.text.pretrained"
        full, family, _, scale, bias = _load(pretrained, architecture, key, False)
        self._keep(full, family, scale, bias, "text_projection", full.config.text_config.hidden_size)
        self.model = full.text_model
        text = full.config.text_config
        if vocab_size > text.vocab_size:
            raise CrossmodalError(f"{key}={pretrained}: the tokenizer has {vocab_size} tokens but the model only "
                                  f"{text.vocab_size}; use the tokenizer in the model's folder")
        self.positions = int(text.max_position_embeddings)
        if max_length > self.positions:
            raise CrossmodalError(f"data.text.max_length={max_length}: {pretrained} takes at most {self.positions} "
                                  f"tokens (its max_position_embeddings); set data.text.max_length={self.positions}")
        if family == "siglip" and getattr(text, "projection_size", text.hidden_size) != text.hidden_size:
            raise CrossmodalError(f"{key}={pretrained}: its text head changes the width ({text.hidden_size} -> "
                                  f"{text.projection_size}); only SigLIP models whose head keeps it are supported")
        self.pad_token_id = pad_token_id
        self.out_dim = int(text.hidden_size)

    def forward(self, text: dict[str, torch.Tensor]) -> Encoded:
        ids, mask = text["input_ids"], text["attention_mask"]
        if self.family == "siglip":
            pad = self.positions - ids.shape[1]
            ids = nn.functional.pad(ids, (0, pad), value=self.pad_token_id)
            mask = nn.functional.pad(mask, (0, pad), value=0)
            out = self.model(input_ids=ids)
        else:
            out = self.model(input_ids=ids, attention_mask=mask)
        return Encoded(pooled=out.pooler_output, tokens=out.last_hidden_state, mask=mask.bool())

    def architecture(self) -> dict:
        """{"model": config.to_dict(), "logit_scale", "logit_bias"}: rebuilds the tower without the folder."""
        return self._architecture()
