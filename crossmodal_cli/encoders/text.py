"""Text encoders. Input: {"input_ids": [B, T], "attention_mask": [B, T]}.

Output: Encoded(pooled [B, D], tokens [B, T, D], mask [B, T] with False on padding).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.errors import CrossmodalError


class BertText(nn.Module):
    """A BERT built from a config (random init); `vocab_size` and `max_length` come from the tokenizer at run time."""

    def __init__(self, *, vocab_size: int, max_length: int, hidden_size: int, num_layers: int, num_heads: int,
                 intermediate_size: int, dropout: float, pooling: str, pad_token_id: int = 0):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise CrossmodalError(f"encoder.text.pooling={pooling}: use mean or cls")
        if hidden_size % num_heads:
            raise CrossmodalError(f"encoder.text: hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=num_heads, intermediate_size=intermediate_size,
                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                            max_position_embeddings=max_length, pad_token_id=pad_token_id)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.pooling = pooling
        self.out_dim = hidden_size

    def forward(self, text: dict[str, torch.Tensor]) -> Encoded:
        mask = text["attention_mask"]
        tokens = self.bert(input_ids=text["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return Encoded(pooled=pooled, tokens=tokens, mask=mask.bool())
