"""MultimodalModel: one encoder per modality, a fusion, a task head; nothing else."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class MultimodalModel(nn.Module):
    """inputs {modality: tensor or dict of tensors} -> logits [B, C].

    Encoders map each modality to an Encoded; the fusion combines them into [B, fusion.out_dim]; the head maps
    that to the task's outputs.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: nn.Module, head: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        encoded = {m: encoder(inputs[m]) for m, encoder in self.encoders.items()}
        return self.head(self.fusion(encoded))
