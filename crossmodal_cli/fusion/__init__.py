"""Fusion strategies: one module per file, one interface.

    Fusion(in_dims={modality: width}, **options from configs/fusion/NAME.yaml)
    forward(encoded: {modality: Encoded}, present: {modality: bool [B]} | None) -> [B, out_dim]  or  Fused
    attribute out_dim
    summary() -> {name: float}   what the fusion learned about the modalities, for metrics.json ({} by default)
    has_gates, last_gates        gated fusions: the last batch's mean gate per modality [B, M]

Every fusion subclasses `Fusion`, which declares these with their defaults. A task whose head reads the encoders'
pooled outputs itself (retrieval) has no fusion at all (`Task.uses_fusion`).

`present[m][b]` is False when sample b has no input for modality m (missing file or blank text with
data.on_missing=zero, or modality dropout); every fusion must ignore absent inputs. None means all present.
Modalities are iterated in sorted order so parameters line up across runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn


class Fusion(nn.Module):
    """Base of every fusion: {modality: Encoded} (+ presence masks) -> [B, out_dim] or `Fused`."""

    out_dim: int
    #: True for a fusion that keeps `last_gates` at each forward (cmeval reports their mean per modality)
    has_gates: bool = False
    #: the last batch's mean gate per modality [B, M] (sorted modality order), detached; None before a forward
    last_gates: torch.Tensor | None = None

    def summary(self) -> dict[str, float]:
        """{name: value} the fusion learned about the modalities (e.g. "weight/image"), written to metrics.json
        and the modality-importance report; {} (the default) for a fusion with nothing to say."""
        return {}


@dataclass
class Fused:
    """A fusion's output when it also has per-modality (unimodal) features, e.g. decision-level fusion.

    features:     [B, out_dim], what the task head classifies.
    per_modality: {modality: [B, out_dim]}; the head applied to each gives auxiliary unimodal predictions whose
                  losses are added with weight aux_weight (zero weight: reported, not trained).
    """

    features: torch.Tensor
    per_modality: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_weight: float = 0.0


def presence(present: Mapping[str, torch.Tensor] | None, modality: str, like: torch.Tensor) -> torch.Tensor:
    """present[modality] as a float [B, 1] mask shaped for broadcasting against [B, D]; ones when None."""
    if present is None or modality not in present:
        return torch.ones(like.shape[0], 1, dtype=like.dtype, device=like.device)
    return present[modality].to(like.dtype).unsqueeze(-1)
