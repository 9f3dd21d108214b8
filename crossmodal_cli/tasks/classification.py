"""Single-label classification: a linear head, softmax cross-entropy, accuracy / macro-F1 via torchmetrics."""
from __future__ import annotations

import torch
import torchmetrics
from torch import nn


class Classification:
    """Everything task-specific, so neither the model nor the loop needs to know the kind of target."""

    def __init__(self, num_classes: int, label_smoothing: float):
        self.num_classes = num_classes
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def head(self, in_dim: int) -> nn.Module:
        """Fusion output [B, in_dim] -> logits [B, num_classes]."""
        return nn.Linear(in_dim, self.num_classes)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits.float(), target)

    def metrics(self) -> torchmetrics.MetricCollection:
        """Fresh metric state for one pass over a split; update(probabilities, target)."""
        n = self.num_classes
        return torchmetrics.MetricCollection({
            "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes=n, average="micro"),
            "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes=n, average="macro"),
        })

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, C] probabilities in fp32."""
        return logits.float().softmax(dim=-1)
