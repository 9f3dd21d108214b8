"""Several label columns at once: one head per column on the shared fusion, loss Σ weight_i · loss_i.

`heads` maps each CSV column to its kind and weight, e.g.
    task.heads: {category: {type: classification}, price: {type: regression, weight: 0.5}, tags: {type: multilabel}}
Each head is a full task of that kind (classification, multilabel, regression; its other keys are that task's
settings, e.g. `label_smoothing`, `separator`, `loss`), with its own state, metrics and prediction columns, all
prefixed with the column name: metrics `COLUMN/NAME` (monitor e.g. `val/price/mae`; by default the first head's
own metric), prediction columns `COLUMN/label`, `COLUMN/predicted`, ... The split is stratified by the first
classification head's column, if there is one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
import torchmetrics
from torch import nn

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task


def _kinds() -> dict[str, type]:
    from crossmodal_cli.tasks.classification import Classification
    from crossmodal_cli.tasks.multilabel import MultiLabel
    from crossmodal_cli.tasks.regression import Regression

    return {"classification": Classification, "multilabel": MultiLabel, "regression": Regression}


def _view(out, column: str):
    """The ModelOutput of one head (its logits, and its unimodal branches' for late fusion)."""
    return type(out)(out.logits[column], {m: a[column] for m, a in out.aux_logits.items()}, out.aux_weight)


class Heads(nn.Module):
    """Fusion output [B, D] -> {column: that head's output}."""

    def __init__(self, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        return {column: head(fused) for column, head in self.heads.items()}


class MultiTask(Task):
    """One sub-task per label column; the loop sees one task whose losses are the weighted sub-losses."""

    def __init__(self, heads: Mapping[str, Mapping[str, Any]], monitor: str | None = None):
        if not heads:
            raise CrossmodalError("task.heads: name at least one label column, e.g. "
                                  "task.heads={category:{type:classification}}")
        kinds = _kinds()
        self.tasks: dict[str, Task] = {}
        self.weights: dict[str, float] = {}
        for column, spec in heads.items():
            spec = dict(spec or {})
            kind = spec.pop("type", None)
            if kind not in kinds:
                raise CrossmodalError(f"task.heads.{column}.type={kind}: use one of {', '.join(kinds)}")
            weight = spec.pop("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise CrossmodalError(f"task.heads.{column}.weight={weight}: must be a number > 0")
            try:
                self.tasks[str(column)] = kinds[kind](**spec)
            except TypeError as err:
                raise CrossmodalError(f"task.heads.{column}: {err} (keys of task={kind})") from None
            self.weights[str(column)] = float(weight)
        first = next(iter(self.tasks))
        self.monitor = monitor or f"{first}/{self.tasks[first].monitor}"

    @staticmethod
    def _key(column: str) -> str:
        return f"label/{column}"

    def _frame(self, frame: pd.DataFrame, column: str) -> pd.DataFrame:
        """`frame` with this head's column as `label` (what a single-column task reads; none when read without
        labels)."""
        key = self._key(column)
        return frame.assign(label=frame[key]) if key in frame else frame

    # ---- labels ----------------------------------------------------------------------------------------------

    def label_columns(self, columns: Mapping[str, Any]) -> dict[str, str]:
        return {self._key(column): column for column in self.tasks}

    def strata(self, frame: pd.DataFrame) -> pd.Series | None:
        for column, task in self.tasks.items():
            strata = task.strata(self._frame(frame, column))
            if strata is not None:
                return strata
        return None

    def check_labels(self, frame: pd.DataFrame, path: Path, headers: Mapping[str, str]) -> None:
        for column, task in self.tasks.items():
            task.check_labels(self._frame(frame, column), path, {"label": headers[self._key(column)]})

    @property
    def fitted(self) -> bool:
        return all(task.fitted for task in self.tasks.values())

    def fit(self, train: pd.DataFrame, headers: Mapping[str, str]) -> None:
        for column, task in self.tasks.items():
            task.fit(self._frame(train, column), {"label": headers[self._key(column)]})

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        """Each head's targets, row by row as {column: target}; a row one head drops is dropped for all."""
        dropped, per_head = 0, {}
        for column, task in self.tasks.items():
            kept, n = task.targets(self._frame(frame, column), split, on_missing,
                                   {"label": headers[self._key(column)]})
            dropped += n
            per_head[column] = dict(zip(zip(kept["source"], kept["line"]), kept["target"]))
        keys = list(zip(frame["source"], frame["line"]))
        usable = [all(key in targets for targets in per_head.values()) for key in keys]
        frame = frame[usable].reset_index(drop=True).copy()  # only the rows every head could use
        frame["target"] = [{column: per_head[column][key] for column in self.tasks}
                           for key, ok in zip(keys, usable) if ok]
        return frame, dropped

    def describe(self) -> str:
        return "; ".join(f"{column}: {task.describe()}" for column, task in self.tasks.items())

    def state(self) -> dict:
        return {column: task.state() for column, task in self.tasks.items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        for column, task in self.tasks.items():
            task.load_state(state[column])

    # ---- model side ------------------------------------------------------------------------------------------

    def head(self, in_dim: int) -> nn.Module:
        return Heads({column: task.head(in_dim) for column, task in self.tasks.items()})

    def losses(self, out, target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = {}
        for column, task in self.tasks.items():
            for name, loss in task.losses(_view(out, column), target[column]).items():
                losses[f"{column}/{name}"] = self.weights[column] * loss
        return losses

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({f"{column}/{name}": metric for column, task in self.tasks.items()
                                              for name, metric in task.metrics(full).items()},
                                             compute_groups=False)

    def update(self, metrics: torchmetrics.MetricCollection, out, target: Mapping[str, torch.Tensor]) -> None:
        outputs = self.outputs(out)
        for key, metric in metrics.items(keep_base=True):
            column = key.split("/", 1)[0]
            metric.update(outputs[column], self.tasks[column].metric_target(target[column]))

    def outputs(self, out) -> dict[str, torch.Tensor]:
        return {column: task.outputs(_view(out, column)) for column, task in self.tasks.items()}

    def tune(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> bool:
        changed = [task.tune(outputs[column], targets[column]) for column, task in self.tasks.items()]
        return any(changed)

    def predictions(self, outputs: Mapping[str, torch.Tensor], frame: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for column, task in self.tasks.items():
            part = task.predictions(outputs[column], self._frame(frame, column))
            parts.append(part.rename(columns=lambda name, c=column: f"{c}/{name}"))
        return pd.concat(parts, axis=1)

    def higher_is_better(self, metric: str) -> bool:
        if metric == "loss":
            return False
        column, _, name = metric.partition("/")
        return self.tasks[column].higher_is_better(name)
