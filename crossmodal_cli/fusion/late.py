"""Late (decision-level) fusion: one branch per modality, combined by a (weighted) mean.

Each branch maps its modality's pooled vector to h_m [B, hidden_dim] (projection + MLP, no other modality seen);
the output is sum_m w_m h_m with weights summing to 1 over the sample's present modalities (combine: mean = equal,
learned = softmax of one learned logit per modality). Because the task head is linear, head(sum_m w_m h_m) =
sum_m w_m head(h_m): exactly the weighted mean of per-modality logits, the classic score fusion (Baltrusaitis et
al. 2018; Snoek et al., "Early versus late fusion in semantic video analysis", 2005). The per-modality features
go back in `Fused` so the head also trains each branch alone (auxiliary losses, weight aux_loss_weight).
Being a sum of unimodal scores, it cannot represent labels that depend on an interaction of modalities.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.fusion import Fused, Fusion
from crossmodal_cli.fusion.parts import ModalityWeights, keep_matrix, mlp, projections


class LateFusion(Fusion):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float, combine: str,
                 aux_loss_weight: float):
        super().__init__()
        if combine not in ("mean", "learned"):
            raise CrossmodalError(f"fusion.combine={combine}: use mean or learned")
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        self.branches = nn.ModuleDict({m: mlp(proj_dim, hidden_dim, dropout) for m in self.modalities})
        self.weights = ModalityWeights(self.modalities, learned=combine == "learned")
        self.aux_loss_weight = aux_loss_weight
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded], present: Mapping[str, torch.Tensor] | None = None) -> Fused:
        per_modality = {m: self.branches[m](self.proj[m](encoded[m].pooled)) for m in self.modalities}
        h = torch.stack([per_modality[m] for m in self.modalities], dim=1)                 # [B, M, H]
        weights = self.weights(keep_matrix(present, self.modalities, h))                   # [B, M]
        combined = (weights.unsqueeze(-1).to(h.dtype) * h).sum(1)                          # [B, H]
        return Fused(features=combined, per_modality=per_modality, aux_weight=self.aux_loss_weight)

    def summary(self) -> dict[str, float]:
        """{"weight/MODALITY": weight with every modality present}, summing to 1 (equal for combine=mean)."""
        return self.weights.summary()
