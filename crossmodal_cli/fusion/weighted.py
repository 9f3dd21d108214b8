"""Weighted-sum fusion: a learned softmax weight per modality scales its projected pooled vector, then an MLP.

The learned weights say how much the model relies on each modality (reported by `summary()`), in the spirit of
learned modality weighting in late/score fusion (e.g. Vielzeuf et al., "CentralNet", 2018).
{modality: Encoded(pooled [B, D_m])} -> [B, hidden_dim]. Each sample's softmax runs over the modalities it has,
so an absent modality's weight goes to the present ones.
"""
from __future__ import annotations

from typing import Mapping

import torch

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion.parts import ModalityWeights, PooledFusion, keep_matrix


class WeightedFusion(PooledFusion):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__(in_dims, proj_dim, hidden_dim, dropout)
        self.weights = ModalityWeights(self.modalities, learned=True)

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        projected = torch.stack(list(self.projected(encoded).values()), dim=1)                      # [B, M, P]
        keep = keep_matrix(present, self.modalities, projected)                                     # [B, M]
        weights = self.weights(keep) * keep.sum(1, keepdim=True)      # sums to #present: equal weights = sum fusion
        return self.mlp((weights.unsqueeze(-1).to(projected.dtype) * projected).sum(1))

    def summary(self) -> dict[str, float]:
        """{"weight/MODALITY": learned weight with every modality present}, summing to 1."""
        return self.weights.summary()
