"""Where and how a run computes: the device, the precision, the seeds, determinism and the speed settings.

The one place seeds are set and the global torch switches (deterministic algorithms, TF32) are turned; everything
else receives a `torch.device` and a precision name ("bf16", "fp16" or "fp32").
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings.run import TrainerSettings

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    """The one place seeds are set: Python, NumPy, torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """trainer.deterministic: deterministic algorithms (warn where there are none); on CUDA also cuBLAS's fixed
    workspace and cuDNN's deterministic algorithms."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """trainer.device (auto, cpu, cuda, cuda:N) as a device; one line when no GPU is there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CrossmodalError(f"trainer.device={name}: no CUDA GPU is visible; use trainer.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CrossmodalError(f"trainer.device={name}: use auto, cpu, cuda or cuda:N") from None


def resolve_precision(name: str, device: torch.device) -> str:
    """trainer.precision for `device`: auto is bf16 on CUDA, fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("bf16", "fp16", "fp32"):
        raise CrossmodalError(f"trainer.precision={name}: use auto, bf16, fp16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CrossmodalError("trainer.precision=bf16: this GPU has no bf16 support; use trainer.precision=fp16")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def speed_settings(model, trainer: TrainerSettings, device: torch.device, precision: str) -> None:
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
