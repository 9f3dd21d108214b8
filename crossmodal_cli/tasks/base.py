"""The task interface: everything about the objective, so neither the model nor the loop knows the kind of target.

A task (one module here, one YAML under configs/task/) owns:
  * which label column(s) it reads (`label_columns`) and how rows are stratified when one CSV is split (`strata`);
  * how labels become targets (`fit` on the training split builds the state it needs: a class vocabulary, the
    target mean/std, ...; `targets` turns one split's labels into a `target` column), and that state in the
    checkpoint (`state` / `load_state`);
  * whether the configured fusion combines the encoders (`uses_fusion`; False: the head reads the encoders' pooled
    outputs itself, as retrieval's two towers do);
  * its head (`head`: fusion output [B, D] -> what `losses` reads), `losses(out, target) -> {name: tensor}` (the
    loop sums them), its metric collections (`metrics(full=False)`: the cheap per-epoch set; `full=True`: the end
    of a run and cmeval), how outputs become a predictions table (`outputs`, `predictions`), its default monitored
    metric and whether higher is better (`monitor`, `higher_is_better`), and the labels cmpredict's
    predict.top_k ranks, for tasks that have them (`ranked_labels`, `top_k`).

The loop only moves batches, sums `losses`, steps and calls `update` on the metrics. Targets reach the batch as
`batch["target"]`, stacked by `data.collate.collate_targets` from each row's value in the split frame's `target` column (an int,
a float, or a NumPy vector).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
import torchmetrics
from torch import nn

from crossmodal_cli.data.csvfile import describe_rows, printable
from crossmodal_cli.encoders.clip import JointSpace
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)


class Task(ABC):
    """Base class: the single-label-column defaults; subclasses fill in the objective."""

    #: the metric (without "val/") that picks best.ckpt when trainer.monitor is null
    monitor: str = "loss"
    #: True: the configured fusion combines the encoders and `head` takes its out_dim; False: the model has no
    #: fusion, `head` takes {modality: width} and reads {modality: pooled [B, D_m]}
    uses_fusion: bool = True

    # ---- labels and targets ------------------------------------------------------------------------------------

    def label_columns(self, columns: Mapping[str, Any]) -> dict[str, str]:
        """{canonical column in the split frames: configured CSV header}; {} when the task reads no label."""
        return {"label": columns["label"]}

    def strata(self, frame: pd.DataFrame) -> pd.Series | None:
        """What a seeded split of one CSV keeps in proportion (None: a plain seeded random split)."""
        return None

    def check_labels(self, frame: pd.DataFrame, path: Path, headers: Mapping[str, str]) -> None:
        """Refuse, in one line naming `path`, labels this task can never use (before the CSV is split)."""

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, train: pd.DataFrame, headers: Mapping[str, str]) -> None:
        """Build the target state from the training split (headers: canonical column -> CSV header, for errors)."""

    @abstractmethod
    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        """`frame` with a `target` column; returns (frame, rows dropped). Raises one line for unusable labels."""

    def describe(self) -> str:
        """A few words for the log: '3 classes', 'target mean 4.1, std 0.9', ..."""
        return type(self).__name__

    def state(self) -> dict:
        """Plain values (a weights_only checkpoint can hold them) that `load_state` restores."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        pass

    # ---- model side ----------------------------------------------------------------------------------------------

    def check(self, cfg) -> None:
        """Refuse, in one line, settings of the composed config that this task cannot work with (start-up)."""

    def modalities(self, requested: list[str] | None) -> list[str] | None:
        """The modalities the task works on, given `modalities=` (None: every one with a column)."""
        return requested

    def initialise(self, model: nn.Module, embed_texts: Callable[[list[str]], torch.Tensor]) -> bool:
        """Start the head of a new run from the model's pretrained encoders before the first epoch (retrieval:
        a CLIP/SigLIP checkpoint's joint space; zero-shot: its class prompts), replacing `model.head` where the
        widths change; not called on resume or rebuild (the checkpoint's weights and the task's state follow).
        `embed_texts(texts) -> [N, E]`: unit joint-space embeddings by the run's text tower and tokenizer.
        Returns whether the task's state changed (by default nothing happens: False)."""
        return False

    @abstractmethod
    def head(self, in_dim: int) -> nn.Module:
        """The fusion output [B, in_dim] -> what `losses` and `outputs` read (with `uses_fusion` False: in_dim
        is {modality: width} and the head reads {modality: pooled [B, D_m]})."""

    @abstractmethod
    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: scalar loss}; the loop minimises their sum. `out` is the model's ModelOutput."""

    @abstractmethod
    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        """Fresh metric state for one pass: the cheap per-epoch set, or with `full` the end-of-run set."""

    def metric_names(self) -> list[str]:
        """The names `metrics()` reports (what trainer.monitor may name after "val/")."""
        return list(self.metrics().keys())

    def update(self, metrics: torchmetrics.MetricCollection, out, target: torch.Tensor) -> None:
        metrics.update(self.outputs(out), self.metric_target(target))

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        """The target as this task's metrics take it (multi-label: int 0/1)."""
        return target

    @abstractmethod
    def outputs(self, out) -> torch.Tensor:
        """Per-row values kept for predictions (probabilities, numbers), fp32 [B, ...]."""

    def embeddings(self, out) -> dict[str, torch.Tensor]:
        """Per-row vectors of this task worth keeping besides the fused features (cmpredict predict.embeddings)."""
        return {}

    @abstractmethod
    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        """The task's columns of predictions.csv for the rows of `frame` (in the order of `outputs`)."""

    def probabilities(self, outputs: torch.Tensor, index) -> pd.DataFrame:
        """One column per class (named by the class), one row per output (the Python API's predict_proba); a
        task without classes refuses in one line."""
        raise CrossmodalError(f"predict_proba: {type(self).__name__} gives no class probabilities; use predict")

    def ranked_labels(self) -> list[str] | None:
        """The labels `top_k` ranks (single-label classification: its classes); None for a task without them."""
        return None

    def top_k(self, outputs: torch.Tensor, k: int) -> pd.DataFrame:
        """top1 … topK: the K most likely labels of each row, most likely first; a task without labels to rank
        refuses in one line."""
        raise CrossmodalError(f"predict.top_k={k}: {type(self).__name__} has no labels to rank")

    def tune(self, outputs: torch.Tensor, targets: torch.Tensor) -> bool:
        """Adjust decoding on the validation split's outputs after training (multi-label: the threshold); True
        when the state changed (best.ckpt is then rewritten with it)."""
        return False

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of `metric` (a name from `metrics()`, or "loss") is better."""
        return metric != "loss"

    def chance(self) -> dict[str, float]:
        """{metric: value a guess reaches} for the metrics where that is known (drawn in curves.png)."""
        return {}

    def report(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """Plain values cmeval turns into report.txt and pictures (classification: the confusion matrix,
        per-class scores, reliability bins), from one split's outputs and targets; {} for none."""
        return {}

    # ---- pieces shared by the tasks ------------------------------------------------------------------------------

    def main_and_aux(self, out, loss_fn) -> dict[str, torch.Tensor]:
        """{"loss": loss of the fused prediction} plus, for fusions with unimodal branches (late), {"aux":
        aux_weight x the mean loss of the unimodal predictions}."""
        losses = {"loss": loss_fn(out.logits)}
        if out.aux_logits and out.aux_weight:
            losses["aux"] = out.aux_weight * torch.stack([loss_fn(logits) for logits in out.aux_logits.values()]).mean()
        return losses


def labels_error(path: Path | str, frame: pd.DataFrame, mask: pd.Series, header: str, what: str,
                 todo: str) -> CrossmodalError:
    """One line naming the file, column and rows of labels that cannot be used, and what to do."""
    return CrossmodalError(f"{path}: column '{printable(header, 60)}' {what} in {describe_rows(frame[mask])}; {todo}")


def drop_or_refuse(frame: pd.DataFrame, bad: pd.Series, split: str, on_missing: str, why: str,
                   refusal: str) -> tuple[pd.DataFrame, int]:
    """Rows whose label the task cannot use (`bad`): with data.on_missing=error the one-line `refusal`; otherwise
    they are dropped (a row without a usable target cannot be kept), logged, and counted. A train or val split
    left empty is an error."""
    if not bad.any():
        return frame, 0
    if on_missing == "error":
        raise CrossmodalError(refusal)
    dropped = frame[bad]
    log.warning("%s split: dropped %s %s (data.on_missing=%s)", split, describe_rows(dropped), why, on_missing)
    frame = frame[~bad].reset_index(drop=True)
    if frame.empty and split != "test":
        raise CrossmodalError(f"{dropped['source'].iloc[0]}: the {split} split has no rows left after dropping "
                              f"{describe_rows(dropped)} {why}; fix the labels")
    return frame, len(dropped)


def label_column(frame: pd.DataFrame) -> dict[str, Any]:
    """{"label": the labels as written} for predictions.csv, or {} for rows read without labels (cmpredict)."""
    return {"label": frame["label"].to_numpy()} if "label" in frame else {}


def probability_columns(classes: list[str]) -> list[str]:
    """prob_LABEL per class, made safe for any label text: control characters and line breaks become spaces, and
    labels that would then share a column name (or collide after that) get their class index appended."""
    names = ["prob_" + "".join(c if c.isprintable() else " " for c in label) for label in classes]
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{name}#{i}" if seen[name] > 1 else name for i, name in enumerate(names)]


def joint_spaces(encoders: Mapping[str, nn.Module], modalities: Sequence[str],
                 required_by: str | None) -> dict[str, JointSpace] | None:
    """{modality: JointSpace} when the encoders of `modalities` are towers of one CLIP/SigLIP model (the same
    config), else None, or with `required_by` (the key that needs them) one line saying what to use."""
    spaces = {m: encoders[m].joint_space() for m in modalities if hasattr(encoders[m] if m in encoders else None,
                                                                          "joint_space")}
    same = len(spaces) == len(modalities) and all(s.model == spaces[modalities[0]].model for s in spaces.values())
    if same:
        return spaces
    if required_by is None:
        return None
    why = "are towers of different models" if len(spaces) == len(modalities) else "are not CLIP/SigLIP towers"
    raise CrossmodalError(f"{required_by}: the {' and '.join(modalities)} encoders {why}; use encoder/image=clip "
                          f"encoder/text=clip with the same encoder.*.pretrained folder")


def require_fitted(task: Task) -> None:
    if not task.fitted:
        raise RuntimeError(f"{type(task).__name__}: fit() or load_state() must come before this")
