"""Product fusion: element-wise (Hadamard) product of the projected pooled vectors, then an MLP.

Multiplicative interactions between modalities in one step, as in MLB (Kim et al., "Hadamard Product for Low-rank
Bilinear Pooling", 2017). {modality: Encoded(pooled [B, D_m])} -> [B, hidden_dim]. An absent modality is replaced
by ones, the neutral element of the product.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence
from crossmodal_cli.fusion.parts import mlp, projections


class ProductFusion(nn.Module):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        self.mlp = mlp(proj_dim, hidden_dim, dropout)
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        product = 1
        for m in self.modalities:
            projected = self.proj[m](encoded[m].pooled)        # [B, proj_dim]
            keep = presence(present, m, projected)             # [B, 1]
            product = product * (projected * keep + (1 - keep))
        return self.mlp(product)
