"""Settings that make the training step fast without changing what it computes (beyond float rounding)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig


def speed_settings(model, trainer: DictConfig, device: torch.device, precision: str) -> None:
    """What makes the step fast without changing what it computes (beyond float rounding): channels_last for
    convolutional image encoders (trainer.channels_last; auto = on CUDA), TF32 matmuls/convolutions for fp32 on
    CUDA (trainer.tf32), and torch.compile in place (trainer.compile: nn.Module.compile keeps the parameter names,
    so checkpoints load with or without it)."""
    image = model.encoders["image"] if "image" in model.encoders else None
    channels_last = trainer.channels_last if trainer.channels_last != "auto" else device.type == "cuda"
    if channels_last and image is not None and any(isinstance(m, torch.nn.Conv2d) for m in image.modules()):
        image.to(memory_format=torch.channels_last)
    if device.type == "cuda" and precision == "fp32" and trainer.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if trainer.compile:
        model.compile()
