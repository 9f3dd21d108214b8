"""Sum fusion: add the modalities' projected pooled vectors, then an MLP.

A standard early-fusion baseline (Baltrusaitis et al., "Multimodal Machine Learning: A Survey and Taxonomy",
2018): every modality is projected into one shared space, so the fused vector has the same width whatever the
number of modalities. {modality: Encoded(pooled [B, D_m])} -> [B, hidden_dim]. An absent modality
adds nothing.
"""
from __future__ import annotations

from typing import Mapping

import torch

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import presence
from crossmodal_cli.fusion.parts import PooledFusion


class SumFusion(PooledFusion):
    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        total = 0
        for m, x in self.projected(encoded).items():                   # x [B, proj_dim]
            total = total + x * presence(present, m, x)
        return self.mlp(total)
