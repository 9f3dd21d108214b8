"""Joint self-attention fusion: one Transformer encoder over all modalities' tokens plus a fusion [CLS] token.

As in single-stream multimodal Transformers (VisualBERT, Li et al. 2019; MMBT, Kiela et al. 2019), the token
sequences of every modality ([B, T_m, D_m], truncated to max_tokens, projected to width, plus a learned modality
embedding) are concatenated behind a learned [CLS] token and encoded jointly (pre-norm layers); the output is that
token -> [B, width]. Padding (Encoded.mask) and every token of an absent modality are key-padding-masked; the
[CLS] token is never masked, so each row always has a key.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion.parts import TokenProjection


class AttentionFusion(nn.Module):
    def __init__(self, in_dims: Mapping[str, int], width: int, depth: int, heads: int, dropout: float,
                 max_tokens: int):
        super().__init__()
        self.tokens = TokenProjection(in_dims, width, max_tokens)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        streams = list(self.tokens(encoded, present).values())
        batch = streams[0][0].shape[0]
        cls = self.cls.expand(batch, -1, -1).to(streams[0][0].dtype)
        tokens = torch.cat([cls] + [t.to(cls.dtype) for t, _ in streams], dim=1)         # [B, 1 + sum T_m, W]
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=cls.device)] + [k for _, k in streams], 1)
        return self.norm(self.encoder(tokens, src_key_padding_mask=~keep)[:, 0])        # [B, W]
