"""Tabular encoders. Input: {"numeric": float [B, Cn], "numeric_present": bool [B, Cn], "categorical": long [B, Cc]}
as `data/tabular.py` makes it (numeric values already transformed; categorical ids 0 = blank, 1 = unknown,
2.. = the training vocabulary, each below its column's cardinality).

Output: Encoded(pooled [B, D], tokens [B, T, D], mask None (every token real)).
    TabularMLP (encoder/tabular=mlp):  column embeddings, concatenated, through an MLP; T = 1 (the pooled vector)
    FTTransformer (encoder/tabular=ft_transformer): one token per column through a Transformer; T = C columns

Run-time values, from the fitted preprocessing: `numeric_columns` (Cn) and `cardinalities` (per categorical
column: vocabulary + 2 reserved ids). Either may be zero columns, not both.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal_cli.encoders.base import Encoded, Encoder, stem_blocks_rest
from crossmodal_cli.encoders.checkpointing import recompute_blocks
from crossmodal_cli.errors import CrossmodalError


def _uniform(*shape: int) -> nn.Parameter:
    """A parameter initialised uniformly in +-1/sqrt(d) (d = the last dimension), as rtdl's FT-Transformer does."""
    bound = shape[-1] ** -0.5
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class ColumnEmbedding(nn.Module):
    """Every column of a row as a d-wide vector: [B, Cn + Cc, d], numeric columns first.

    Numeric column c: value * W_c + b_c where present, its learned missing vector m_c where not (the value 0.0 of
    a blank cell is never read as a number). Categorical column c: row `id` of its own embedding table, so id 0
    (blank) and id 1 (unknown) are learned rows of each column. The tables are one nn.Embedding with each column's
    rows at an offset, one lookup for all columns.
    """

    def __init__(self, numeric_columns: int, cardinalities: Sequence[int], dim: int):
        super().__init__()
        cardinalities = [int(c) for c in cardinalities]
        if numeric_columns < 0 or any(c < 2 for c in cardinalities):
            raise CrossmodalError(f"encoder.tabular: numeric_columns={numeric_columns} and cardinalities="
                                  f"{cardinalities} must be >= 0 and >= 2 (the blank and unknown ids) each")
        if numeric_columns + len(cardinalities) == 0:
            raise CrossmodalError("encoder.tabular: no tabular columns; name them in data.columns.tabular")
        self.numeric_columns, self.categorical_columns = numeric_columns, len(cardinalities)
        # parameters only for the kinds of column there are: one left unused would stop a DDP run
        if numeric_columns:
            self.weight, self.bias, self.missing = (_uniform(numeric_columns, dim) for _ in range(3))
        if cardinalities:
            self.embedding = nn.Embedding(sum(cardinalities), dim)
            nn.init.uniform_(self.embedding.weight, -dim ** -0.5, dim ** -0.5)
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0)[:len(cardinalities)]
        self.register_buffer("offsets", offsets, persistent=False)
        self.dim = dim

    @property
    def columns(self) -> int:
        return self.numeric_columns + self.categorical_columns

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.numeric_columns:
            values = x["numeric"].to(self.weight.dtype).unsqueeze(-1)         # [B, Cn, 1]
            present = x["numeric_present"].bool().unsqueeze(-1)                # [B, Cn, 1]
            parts.append(torch.where(present, values * self.weight + self.bias, self.missing))
        if self.categorical_columns:
            parts.append(self.embedding(x["categorical"].long() + self.offsets))  # [B, Cc, d]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class _Block(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Dropout: [B, D_in] -> [B, D]."""

    def __init__(self, dim_in: int, dim: int, dropout: float):
        super().__init__()
        self.linear, self.norm, self.dropout = nn.Linear(dim_in, dim), nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(self.norm(self.linear(x))))


class TabularMLP(Encoder):
    """Column embeddings (`ColumnEmbedding`, `embedding_dim` wide) concatenated [B, C * e] -> `num_layers` blocks
    of `hidden_size` -> pooled [B, D = hidden_size].

    tokens = pooled as one token [B, 1, D]: the MLP mixes the columns in its first layer and has no per-column
    representation after that; projecting the raw column embeddings to D as extra tokens would add weights that
    only the attention fusions train (unused parameters under the others, which DDP refuses). For per-column
    tokens use encoder/tabular=ft_transformer.
    """

    def __init__(self, *, embedding_dim: int, hidden_size: int, num_layers: int, dropout: float,
                 numeric_columns: int, cardinalities: Sequence[int]):
        super().__init__()
        if num_layers < 1:
            raise CrossmodalError(f"encoder.tabular.num_layers={num_layers}: use 1 or more")
        self.embed = ColumnEmbedding(numeric_columns, cardinalities, embedding_dim)
        widths = [self.embed.columns * embedding_dim] + [hidden_size] * num_layers
        self.blocks = nn.ModuleList(_Block(a, b, dropout) for a, b in zip(widths, widths[1:]))
        self.out_dim = hidden_size

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block's activations in the backward pass (encoders/checkpointing.py)."""
        recompute_blocks(self.blocks)

    def forward(self, x: dict[str, torch.Tensor]) -> Encoded:
        h = self.embed(x).flatten(1)
        for block in self.blocks:
            h = block(h)
        return Encoded(pooled=h, tokens=h.unsqueeze(1))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[column embeddings, block 1, …, block n]."""
        return stem_blocks_rest(self, self.blocks)


class _Attention(nn.Module):
    """Multi-head self-attention over [B, T, D] with one fused q/k/v projection (a LoRA target with the others)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.qkv, self.out, self.heads, self.dropout = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, d/H]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _Layer(nn.Module):
    """A pre-norm Transformer layer: x + attention(norm(x)), then + feed-forward(norm(x)) (GELU, `ffn_factor` x
    wider); [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, heads: int, ffn_factor: float, dropout: float):
        super().__init__()
        hidden = int(round(dim * ffn_factor))
        self.norm1, self.attention = nn.LayerNorm(dim), _Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class FTTransformer(Encoder):
    """The FT-Transformer (Gorishniy et al. 2021, "Revisiting Deep Learning Models for Tabular Data"): one token
    per column (`ColumnEmbedding`, `hidden_size` wide) after a learned [CLS] token, `num_layers` pre-norm
    Transformer layers, a final LayerNorm. pooled = the [CLS] output [B, D]; tokens = the per-column outputs
    [B, C, D], so an attention fusion can attend to single columns; mask None: all tokens are real. A blank cell
    is its column's learned missing token, not a dropped one, because a blank is itself information (a price
    left out says something) and the columns then keep fixed positions in every row.
    """

    def __init__(self, *, hidden_size: int, num_layers: int, num_heads: int, ffn_factor: float, dropout: float,
                 numeric_columns: int, cardinalities: Sequence[int]):
        super().__init__()
        if hidden_size % num_heads:
            raise CrossmodalError(f"encoder.tabular: hidden_size={hidden_size} must be divisible by "
                                  f"num_heads={num_heads}")
        if num_layers < 1:
            raise CrossmodalError(f"encoder.tabular.num_layers={num_layers}: use 1 or more")
        self.embed = ColumnEmbedding(numeric_columns, cardinalities, hidden_size)
        self.cls = _uniform(1, 1, hidden_size)
        self.layers = nn.ModuleList(_Layer(hidden_size, num_heads, ffn_factor, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.out_dim = hidden_size

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each Transformer layer's activations in the backward pass (encoders/checkpointing.py)."""
        recompute_blocks(self.layers)

    def forward(self, x: dict[str, torch.Tensor]) -> Encoded:
        tokens = self.embed(x)                                                 # [B, C, D]
        h = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1)   # [B, 1 + C, D]
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        return Encoded(pooled=h[:, 0], tokens=h[:, 1:])

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[column embeddings and [CLS], layer 1, …, layer n, final norm]."""
        return stem_blocks_rest(self, self.layers)
