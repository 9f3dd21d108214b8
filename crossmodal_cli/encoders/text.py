"""Text encoders. Input: {"input_ids": [B, T], "attention_mask": [B, T]}.

Output: Encoded(pooled [B, D], tokens [B, T, D], mask [B, T] with False on padding).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from crossmodal_cli.encoders.base import Encoded, Encoder, stem_blocks_rest
from crossmodal_cli.encoders.weights import config_dict, hf_blocks, hf_config, hf_folder, hf_model
from crossmodal_cli.errors import CrossmodalError

# model types whose position ids start after the padding id, so max_position_embeddings - pad_token_id - 1 fit
_POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                            "data2vec-text", "longformer", "mpnet", "ibert", "xmod", "markuplm"}


def _pool(tokens: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, D] -> [B, D]: the first token ([CLS]) or the mean over real (mask 1) tokens."""
    if pooling == "cls":
        return tokens[:, 0]
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _check_pooling(pooling: str) -> None:
    if pooling not in ("mean", "cls"):
        raise CrossmodalError(f"encoder.text.pooling={pooling}: use mean or cls")


class BertText(Encoder):
    """A BERT built from a config (random init); `vocab_size` and `max_length` come from the tokenizer at run time."""

    def __init__(self, *, vocab_size: int, max_length: int, hidden_size: int, num_layers: int, num_heads: int,
                 intermediate_size: int, dropout: float, pooling: str, pad_token_id: int = 0):
        super().__init__()
        _check_pooling(pooling)
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
        return Encoded(pooled=_pool(tokens, mask, self.pooling), tokens=tokens, mask=mask.bool())

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings, layer 1, …, layer n]."""
        return stem_blocks_rest(self, self.bert.encoder.layer)


class HFText(Encoder):
    """A pretrained Hugging Face text encoder (BERT, RoBERTa, DeBERTa, MiniLM, E5, BGE, …) from a local folder.

    `AutoConfig` + `AutoModel` with `local_files_only=True`; the tokenizer is the folder's own, loaded by the
    data pipeline. tokens = the last hidden state [B, T, D]; pooled = masked mean or the first token [B, D].
    The model's pooler head (BERT's tanh layer over [CLS]) is removed: its output is not used.
    `vocab_size`/`max_length` (the tokenizer's, data.text.max_length) are checked against the model;
    `pad_token_id` is taken for the common text interface (the attention mask marks padding).
    `architecture` (a stored `architecture()`): build the same model with random weights, read no file.
    """

    def __init__(self, *, pretrained: str, pooling: str, vocab_size: int, max_length: int, pad_token_id: int,
                 architecture: dict | None = None):
        super().__init__()
        _check_pooling(pooling)
        key = "encoder.text.pretrained"
        folder = hf_folder(pretrained, key) if architecture is None else None
        config = hf_config(folder, architecture, key)
        if config.is_encoder_decoder:
            raise CrossmodalError(f"{key}={pretrained}: {config.model_type} is an encoder-decoder model; use an "
                                  f"encoder-only one (BERT, RoBERTa, DeBERTa, MiniLM, E5, BGE, …)")
        self.model = hf_model(folder, config, key, ignore_missing=("pooler.",))
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        rows = self.model.get_input_embeddings().num_embeddings
        if vocab_size > rows:
            raise CrossmodalError(f"{key}={pretrained}: the tokenizer has {vocab_size} tokens but the model only "
                                  f"{rows} embedding rows; use the tokenizer in the model's folder")
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None:
            if config.model_type in _POSITIONS_AFTER_PADDING:
                positions -= (config.pad_token_id or 0) + 1
            if max_length > positions:
                raise CrossmodalError(f"data.text.max_length={max_length}: {pretrained} takes at most {positions} "
                                      f"tokens (its max_position_embeddings); set data.text.max_length={positions}")
        self.pooling = pooling
        self.out_dim = int(config.hidden_size)

    def forward(self, text: dict[str, torch.Tensor]) -> Encoded:
        mask = text["attention_mask"]
        tokens = self.model(input_ids=text["input_ids"], attention_mask=mask).last_hidden_state
        return Encoded(pooled=_pool(tokens, mask, self.pooling), tokens=tokens, mask=mask.bool())

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings, transformer block 1, …, block n, anything after (a final norm)]."""
        return stem_blocks_rest(self, hf_blocks(self.model))

    def architecture(self) -> dict | None:
        """The model's `config.to_dict()` (plain JSON values): rebuilds it without the folder."""
        return config_dict(self.model.config)
