"""Product fusion: element-wise (Hadamard) product of the projected pooled vectors, then an MLP.

Multiplicative interactions between modalities in one step, as in MLB (Kim et al., "Hadamard Product for Low-rank
Bilinear Pooling", 2017). {modality: Encoded(pooled [B, D_m])} -> [B, hidden_dim]. An absent modality is replaced
by ones, the neutral element of the product.
"""
from __future__ import annotations

from typing import Mapping

import torch

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence
from crossmodal_cli.fusion.parts import PooledFusion


class ProductFusion(PooledFusion):
    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        product = 1
        for m, x in self.projected(encoded).items():                   # x [B, proj_dim]
            keep = presence(present, m, x)                             # [B, 1]
            product = product * (x * keep + (1 - keep))
        return self.mlp(product)
