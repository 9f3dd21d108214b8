"""Regression: one number per row; a linear head on standardised targets, MSE or Huber loss, MAE / RMSE / R².

State: the training split's target mean and standard deviation. The head predicts (y - mean) / std, so the loss
and the learning rate do not depend on the target's units; every metric and prediction is in the label's units.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torchmetrics
from torch import nn

from crossmodal_cli.data.csvfile import printable
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task, label_column, labels_error, require_fitted

LOSSES = ("mse", "huber")


def numbers(labels: pd.Series) -> pd.Series:
    """The labels as floats; NaN where a cell is blank or not a finite number."""
    values = pd.to_numeric(labels, errors="coerce").astype("float64")
    return values.where(np.isfinite(values))


class Squeeze(nn.Module):
    """[B, 1] -> [B]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


class Regression(Task):
    """One number per row: Linear head -> [B] standardised prediction; MSE or Huber (delta in standard deviations)."""

    monitor = "mae"

    def __init__(self, loss: str = "mse", huber_delta: float = 1.0):
        if loss not in LOSSES:
            raise CrossmodalError(f"task.loss={loss}: use {' or '.join(LOSSES)}")
        self.loss, self.huber_delta = loss, huber_delta
        self.mean: float | None = None
        self.std: float | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def check_labels(self, frame: pd.DataFrame, path: Path, headers: Mapping[str, str]) -> None:
        bad = numbers(frame["label"]).isna()
        if bad.any():
            example = printable(frame.loc[bad, "label"].iloc[0], 30)
            raise labels_error(path, frame, bad, headers["label"],
                               f"is not a number (e.g. '{example}')" if example else "is blank",
                               "task=regression needs a number in every row (e.g. 3.5, -2, 1e-3)")

    def fit(self, train: pd.DataFrame, headers: Mapping[str, str]) -> None:
        values = numbers(train["label"]).to_numpy()
        std = float(values.std())
        if not std > 0:
            raise CrossmodalError(f"{train['source'].iloc[0]}: column '{printable(headers['label'], 60)}': every "
                                  f"training row has the same value ({values[0]:g}); there is nothing to regress")
        self.mean, self.std = float(values.mean()), std

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        frame = frame.copy()
        frame["target"] = numbers(frame["label"]).astype("float32")
        return frame, 0

    def describe(self) -> str:
        return f"regression target mean {self.mean:.4g}, std {self.std:.4g}" if self.fitted else "regression"

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])

    def head(self, in_dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(in_dim, 1), Squeeze())

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        require_fitted(self)
        scaled = (target.float() - self.mean) / self.std
        if self.loss == "mse":
            return self.main_and_aux(out, lambda pred: nn.functional.mse_loss(pred.float(), scaled))
        return self.main_and_aux(out, lambda pred: nn.functional.huber_loss(pred.float(), scaled,
                                                                          delta=self.huber_delta))

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        """MAE, RMSE, R² in the label's units (the same set per epoch and at the end)."""
        return torchmetrics.MetricCollection({"mae": torchmetrics.MeanAbsoluteError(),
                                              "rmse": torchmetrics.MeanSquaredError(squared=False),
                                              "r2": torchmetrics.R2Score()})

    def outputs(self, out) -> torch.Tensor:
        """[B] predictions in the label's units."""
        return out.logits.float() * self.std + self.mean

    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({**label_column(frame), "predicted": outputs.numpy()})

    def higher_is_better(self, metric: str) -> bool:
        return metric == "r2"
