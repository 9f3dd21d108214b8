"""Knowledge distillation (Hinton et al. 2015): train against a teacher's softened outputs as well as the labels.

loss = alpha x (the task's loss) + (1 - alpha) x T² x KL(softmax(teacher / T) || softmax(student / T)).

`Distillation` wraps the student's classification task: each row's target is {"label": class index, "teacher":
the teacher's logits for that row}; everything else (head, metrics, predictions, state) is the student task's, so
the checkpoint is an ordinary classification checkpoint that cmeval reads without the teacher. The teacher's
logits are computed once per row before training (`crossmodal_cli/distill.py`), on inputs without augmentation.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import torch
import torchmetrics
from torch import nn

from crossmodal_cli.tasks.base import Task


class Distillation(Task):
    """The student's task plus the distillation term; targets {"label", "teacher"}."""

    def __init__(self, task: Task, alpha: float, temperature: float):
        self.task, self.alpha, self.temperature = task, alpha, temperature
        self.monitor = task.monitor

    def losses(self, out, target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = {name: self.alpha * loss for name, loss in self.task.losses(out, target["label"]).items()}
        t = self.temperature
        student = nn.functional.log_softmax(out.logits.float() / t, dim=-1)
        teacher = nn.functional.log_softmax(target["teacher"].float() / t, dim=-1)
        kl = nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
        losses["distill"] = (1 - self.alpha) * t * t * kl
        return losses

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        return self.task.targets(frame, split, on_missing, headers)

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        return self.task.metrics(full)

    def metric_names(self) -> list[str]:
        return self.task.metric_names()

    def update(self, metrics: torchmetrics.MetricCollection, out, target: Mapping[str, torch.Tensor]) -> None:
        self.task.update(metrics, out, target["label"])

    def outputs(self, out) -> torch.Tensor:
        return self.task.outputs(out)

    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        return self.task.predictions(outputs, frame)

    def tune(self, outputs: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> bool:
        return self.task.tune(outputs, targets["label"])

    def higher_is_better(self, metric: str) -> bool:
        return self.task.higher_is_better(metric)

    def chance(self) -> dict[str, float]:
        return self.task.chance()

    def head(self, in_dim: int) -> nn.Module:
        return self.task.head(in_dim)

    @property
    def uses_fusion(self) -> bool:
        return self.task.uses_fusion

    def describe(self) -> str:
        return f"{self.task.describe()}; distilled (alpha {self.alpha:g}, temperature {self.temperature:g})"

    def state(self) -> dict:
        return self.task.state()

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.task.load_state(state)
