"""Pieces the fusion strategies share: per-modality projections, the MLP, presence masks, learned modality
weights and token sequences for the attention fusions.

Shapes: B batch, M modalities (sorted), T tokens, D widths.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.fusion import Fusion, presence


def projections(in_dims: Mapping[str, int], dim: int) -> nn.ModuleDict:
    """{modality: Linear(D_m, dim) + LayerNorm(dim)}; works on [B, D] and [B, T, D]."""
    return nn.ModuleDict({m: nn.Sequential(nn.Linear(in_dims[m], dim), nn.LayerNorm(dim)) for m in sorted(in_dims)})


def mlp(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """Linear -> GELU -> Dropout: [B, in_dim] -> [B, hidden_dim]."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))


def keep_matrix(present: Mapping[str, torch.Tensor] | None, modalities: Sequence[str],
                like: torch.Tensor) -> torch.Tensor:
    """bool [B, M]: True where sample b has modality m (all True when `present` is None)."""
    return torch.cat([presence(present, m, like) for m in modalities], dim=1).bool()


class PooledFusion(Fusion):
    """Base of the fusions that project each modality's pooled vector and end in an MLP (concat, sum, weighted,
    product): sets modalities (sorted), proj {modality: [B, D_m] -> [B, proj_dim]}, mlp [B, mlp_in] ->
    [B, hidden_dim] (mlp_in defaults to proj_dim) and out_dim. Subclasses write forward()."""

    def __init__(self, in_dims: Mapping[str, int], proj_dim: int, hidden_dim: int, dropout: float,
                 mlp_in: int | None = None):
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = projections(in_dims, proj_dim)
        self.mlp = mlp(mlp_in or proj_dim, hidden_dim, dropout)
        self.out_dim = hidden_dim

    def projected(self, encoded: Mapping[str, Encoded]) -> dict[str, torch.Tensor]:
        """{modality: projected pooled vector [B, proj_dim]}, in sorted order."""
        return {m: self.proj[m](encoded[m].pooled) for m in self.modalities}


def masked_softmax(logits: torch.Tensor, keep: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over `dim` restricted to entries where keep is True; masked entries get exactly 0.

    keep broadcasts against logits. A row with nothing kept gives zeros (never NaN, also in the backward pass).
    """
    filled = logits.float().masked_fill(~keep, torch.finfo(torch.float32).min)
    return filled.softmax(dim=dim) * keep


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, T, D] over the tokens where keep [B, T] is True -> [B, D]; zeros where none is kept."""
    weights = keep.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class ModalityWeights(nn.Module):
    """One weight per modality, softmax-normalised per sample over the modalities it has.

    learned=True: a learned logit per modality (zeros at start = equal weights); False: always 1 / #present.
    forward(keep bool [B, M]) -> float [B, M], rows summing to 1 over the kept modalities.
    """

    def __init__(self, modalities: Sequence[str], learned: bool):
        super().__init__()
        self.modalities = list(modalities)
        logits = torch.zeros(len(self.modalities))
        if learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)

    def forward(self, keep: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.logits.expand(keep.shape[0], -1), keep)

    def summary(self) -> dict[str, float]:
        """{"weight/MODALITY": weight when every modality is present}; the weights sum to 1."""
        weights = self.logits.detach().float().softmax(0).tolist()
        return {f"weight/{m}": w for m, w in zip(self.modalities, weights)}


class TokenProjection(nn.Module):
    """Each modality's tokens, truncated to max_tokens and projected to `width`, with a learned modality embedding.

    forward(encoded, present) -> {modality: (tokens [B, T_m, width], keep bool [B, T_m])}; keep is False on
    padding (Encoded.mask) and on every token of a modality the sample does not have.
    """

    def __init__(self, in_dims: Mapping[str, int], width: int, max_tokens: int):
        super().__init__()
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise CrossmodalError(f"fusion.max_tokens={max_tokens}: must be a whole number >= 1")
        self.modalities = sorted(in_dims)
        self.max_tokens = max_tokens
        self.proj = projections(in_dims, width)
        self.embedding = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)

    def forward(self, encoded: Mapping[str, Encoded],
                present: Mapping[str, torch.Tensor] | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for i, m in enumerate(self.modalities):
            tokens = encoded[m].tokens[:, :self.max_tokens]
            mask = encoded[m].mask
            keep = mask[:, :self.max_tokens].bool() if mask is not None else \
                torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            keep = keep & presence(present, m, tokens).bool()                     # [B, T] & [B, 1]
            out[m] = (self.proj[m](tokens) + self.embedding[i], keep)
        return out
