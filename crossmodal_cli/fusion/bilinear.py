"""Low-rank Multimodal Fusion, LMF (Liu et al., ACL 2018): the Tensor Fusion Network (Zadeh et al., EMNLP 2017)
without building its outer-product tensor.

TFN appends 1 to each modality's vector z_m = [x_m, 1] [B, P+1] and maps their outer product (which holds every
unimodal, bimodal and trimodal interaction) linearly to the output. LMF factors that weight tensor into `rank`
factors per modality: out = sum_r w_r * prod_m (z_m W_m^(r)) + b -> [B, hidden_dim], then GELU and dropout.
An absent modality's z_m is [0, ..., 0, 1], so only its bias path (the appended 1) contributes.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion import Fusion, presence
from crossmodal_cli.fusion.parts import projections


class BilinearFusion(Fusion):
    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, rank: int, dropout: float):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        # Each factor keeps unit variance per output, so the product over modalities neither explodes nor vanishes.
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.randn(rank, proj_dim + 1, hidden_dim)
                                                         / math.sqrt(proj_dim + 1)) for m in self.modalities})
        self.rank_weights = nn.Parameter(torch.full((rank,), 1 / math.sqrt(rank)))
        self.bias = nn.Parameter(torch.zeros(hidden_dim))
        self.act = nn.Sequential(nn.GELU(), nn.Dropout(dropout))
        self.out_dim = hidden_dim

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        product = 1
        for m in self.modalities:
            projected = self.proj[m](encoded[m].pooled)                                  # [B, P]
            z = torch.cat([projected * presence(present, m, projected),
                           torch.ones_like(projected[:, :1])], dim=-1)                   # [B, P+1]
            product = product * torch.einsum("bp,rph->rbh", z, self.factors[m].to(z.dtype))  # [rank, B, H]
        fused = torch.einsum("rbh,r->bh", product, self.rank_weights.to(product.dtype)) + self.bias
        return self.act(fused)
