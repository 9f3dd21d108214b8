"""Early (feature-level) fusion: project each modality's pooled vector, concatenate, MLP.

The baseline of every multimodal comparison (Baltrusaitis et al., "Multimodal Machine Learning: A Survey and
Taxonomy", 2018). Takes {modality: Encoded(pooled [B, D_m])}; gives [B, hidden_dim]. An absent modality
contributes a zero block.
"""
from __future__ import annotations

from typing import Mapping

import torch

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence
from crossmodal_cli.fusion.parts import PooledFusion


class ConcatFusion(PooledFusion):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__(in_dims, proj_dim, hidden_dim, dropout, mlp_in=proj_dim * len(in_dims))

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        parts = [x * presence(present, m, x) for m, x in self.projected(encoded).items()]   # M x [B, proj_dim]
        return self.mlp(torch.cat(parts, dim=-1))
