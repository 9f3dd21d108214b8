"""Sum fusion: add the modalities' projected pooled vectors, then an MLP.

A standard early-fusion baseline (Baltrusaitis et al., "Multimodal Machine Learning: A Survey and Taxonomy",
2018): every modality is projected into one shared space, so the fused vector has the same width whatever the
number of modalities. {modality: Encoded(pooled [B, D_m])} -> [B, hidden_dim]. An absent modality
adds nothing.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence
from crossmodal_cli.fusion.parts import mlp, projections


class SumFusion(nn.Module):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        self.mlp = mlp(proj_dim, hidden_dim, dropout)
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        total = 0
        for m in self.modalities:
            projected = self.proj[m](encoded[m].pooled)        # [B, proj_dim]
            total = total + projected * presence(present, m, projected)
        return self.mlp(total)
