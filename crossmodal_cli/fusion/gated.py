"""Gated Multimodal Unit (Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR workshop 2017).

Each modality's projected vector x_m [B, P] gives a candidate h_m = tanh(W_m x_m) [B, P]; gates computed from the
concatenation of all x [B, M*P] are softmax-normalised over modalities per feature, z [B, M, P] (the paper's
sigmoid z and 1 - z for two modalities); the output sum_m z_m * h_m [B, P] is layer-normalised (a convex mix of
tanh values is small, which slows learning) and goes through an MLP -> [B, hidden_dim]. An absent modality's x
is zeroed in the gate input and its gate is 0 (the softmax runs over present modalities). `last_gates` keeps the
last batch's mean gate per modality [B, M] (detached), which cmeval averages into its modality-importance report.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import Fusion
from crossmodal_cli.fusion.parts import keep_matrix, masked_softmax, mlp, projections


class GatedFusion(Fusion):
    has_gates = True  # keeps last_gates at each forward

    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        self.candidate = nn.ModuleDict({m: nn.Linear(proj_dim, proj_dim) for m in self.modalities})
        self.gate = nn.Linear(proj_dim * len(self.modalities), proj_dim * len(self.modalities))
        self.norm = nn.LayerNorm(proj_dim)
        self.mlp = mlp(proj_dim, hidden_dim, dropout)
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = torch.stack([self.proj[m](encoded[m].pooled) for m in self.modalities], dim=1)      # [B, M, P]
        keep = keep_matrix(present, self.modalities, x).unsqueeze(-1)                           # [B, M, 1]
        x = x * keep.to(x.dtype)
        h = torch.stack([torch.tanh(self.candidate[m](x[:, i])) for i, m in enumerate(self.modalities)], dim=1)
        z = masked_softmax(self.gate(x.flatten(1)).view_as(x), keep)                            # [B, M, P]
        self.last_gates = z.detach().mean(-1)  # [B, M]: each modality's mean gate, read by cmeval's report
        return self.mlp(self.norm((z.to(h.dtype) * h).sum(1)))
