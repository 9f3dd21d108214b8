"""Early (feature-level) fusion: project each modality's pooled vector, concatenate, MLP.

The baseline of every multimodal comparison (Baltrusaitis et al., "Multimodal Machine Learning: A Survey and
Taxonomy", 2018). Takes {modality: Encoded(pooled [B, D_m])}; gives [B, hidden_dim]. An absent modality
contributes a zero block.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence


class ConcatFusion(nn.Module):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(in_dims[m], proj_dim), nn.LayerNorm(proj_dim))
                                   for m in self.modalities})
        self.mlp = nn.Sequential(nn.Linear(proj_dim * len(self.modalities), hidden_dim), nn.GELU(),
                                 nn.Dropout(dropout))
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        parts = []
        for m in self.modalities:
            projected = self.proj[m](encoded[m].pooled)
            parts.append(projected * presence(present, m, projected))
        return self.mlp(torch.cat(parts, dim=-1))
