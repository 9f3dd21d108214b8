"""Encoders: one module per modality, each turning its input into an `Encoded` with a fixed `out_dim`."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    """One modality's encoding of a batch.

    pooled: [B, D] one vector per sample.
    tokens: [B, T, D] a sequence (image grid positions, text tokens, audio frames) for attention fusions.
    mask:   [B, T] bool, True where a token is real (text padding is False); None = all real.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
