"""Single-label classification: one class per row; a linear head, softmax cross-entropy, torchmetrics metrics.

State: the class vocabulary (built from the training split: sorted numerically when every label is an integer,
else alphabetically; index = target). `class_weights=balanced` weights the loss by n_rows / (n_classes x
n_rows_of_class) from the training split (scikit-learn's "balanced"), stored with the classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
import torchmetrics
from torch import nn
from torchmetrics import classification as tmc
from torchmetrics.functional import classification as tmf

from crossmodal_cli.data.csvfile import describe_rows, printable
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import (Task, drop_or_refuse, label_column, labels_error, probability_columns,
                                       require_fitted)

# Label spellings that mean "no label", as spreadsheets and pandas write them (pandas' defaults, less the exotic
# ones). Compared after casefold(), except NA and None: a class called "na" or "none" stays a class.
MISSING_LABELS = frozenset({"nan", "null", "n/a", "#n/a", "<na>"})
MISSING_LABELS_EXACT = frozenset({"NA", "None"})
TOP_K = 5             # top-5 accuracy is reported when there are more than 5 classes
CALIBRATION_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram


def missing_labels(labels: pd.Series) -> pd.Series:
    """True where a (stripped) label is blank or a missing-value spelling (NaN, N/A, null, …; MISSING_LABELS)."""
    return (labels == "") | labels.str.casefold().isin(MISSING_LABELS) | labels.isin(MISSING_LABELS_EXACT)


def class_names(labels: pd.Series) -> list[str]:
    """Sorted label vocabulary: numerically when every label is an integer, else alphabetically."""
    unique = labels.unique().tolist()
    try:
        return [str(v) for v in sorted(unique, key=int)]
    except ValueError:
        return sorted(unique)


def refuse_missing(path: Path | str, frame: pd.DataFrame, labels: pd.Series, header: str) -> None:
    """One line for blank / NaN-like labels: every row of a classification needs one."""
    blank = missing_labels(labels)
    if blank.any():
        marker = next((label for label in labels[blank] if label), None)
        what = f"blank or a missing-value marker (e.g. '{printable(marker, 20)}')" if marker else "blank"
        raise labels_error(path, frame, blank, header, f"is {what}", "every row needs a label (or remove those rows)")


class Classification(Task):
    """One class per row: Linear head -> logits [B, C]; cross-entropy (label smoothing, optional class weights)."""

    monitor = "accuracy"

    def __init__(self, label_smoothing: float = 0.0, class_weights: str | None = None):
        if class_weights not in (None, "balanced"):
            raise CrossmodalError(f"task.class_weights={class_weights}: use null or balanced")
        self.label_smoothing, self.class_weights = label_smoothing, class_weights
        self.classes: list[str] = []
        self.weights: list[float] | None = None
        self._from_train = True  # False after load_state: the vocabulary came from a checkpoint

    @classmethod
    def with_classes(cls, classes, **settings: Any) -> "Classification":
        """A fitted task with this vocabulary (an int n: classes "0" … "n-1"), for tests and notebooks."""
        task = cls(**settings)
        task.classes = [str(c) for c in (range(classes) if isinstance(classes, int) else classes)]
        return task

    # ---- labels ----------------------------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return bool(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def strata(self, frame: pd.DataFrame) -> pd.Series:
        return frame["label"]

    def check_labels(self, frame: pd.DataFrame, path: Path, headers: Mapping[str, str]) -> None:
        refuse_missing(path, frame, frame["label"], headers["label"])

    def fit(self, train: pd.DataFrame, headers: Mapping[str, str]) -> None:
        classes = class_names(train["label"])
        if len(classes) < 2:
            raise CrossmodalError(
                f"{train['source'].iloc[0]}: column '{printable(headers['label'], 60)}': the training split has only "
                f"one class ('{printable(classes[0], 60)}', {len(train)} rows); classification needs at least two: "
                f"add rows of another class (or check the split column)")
        self.classes = classes
        if self.class_weights == "balanced":
            counts = train["label"].value_counts()
            self.weights = [len(train) / (len(classes) * int(counts[c])) for c in classes]

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        """Class indices; a label outside the vocabulary is an error with on_missing=error, else the row is
        dropped (a row without a known class cannot be kept) and counted."""
        require_fitted(self)
        index = {name: i for i, name in enumerate(self.classes)}
        unseen = ~frame["label"].isin(index)
        where = "the training split" if self._from_train else "the checkpoint's label vocabulary"
        first = frame[unseen].iloc[0] if unseen.any() else None
        frame, dropped = drop_or_refuse(
            frame, unseen, split, on_missing, f"whose label is not in {where}",
            first is not None and f"{first['source']}: label '{printable(first['label'], 60)}' in the {split} split "
            f"is not in {where} ({describe_rows(frame[unseen])}); known labels: "
            f"{', '.join(printable(c, 40) for c in self.classes[:20])}{', ...' if len(self.classes) > 20 else ''} "
            f"(fix the labels, or set data.on_missing=drop to skip those rows)")
        frame = frame.copy()
        frame["target"] = frame["label"].map(index).astype("int64")
        return frame, dropped

    def describe(self) -> str:
        return f"{len(self.classes)} classes"

    def state(self) -> dict:
        return {"classes": list(self.classes), "weights": self.weights}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.classes = [str(c) for c in state["classes"]]
        self.weights = state.get("weights")
        self._from_train = False

    # ---- model side ------------------------------------------------------------------------------------------

    def head(self, in_dim: int) -> nn.Module:
        """Fusion output [B, in_dim] -> logits [B, num_classes]."""
        require_fitted(self)
        return nn.Linear(in_dim, self.num_classes)

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = torch.tensor(self.weights, device=target.device) if self.weights else None
        return self.main_and_aux(out, lambda logits: nn.functional.cross_entropy(
            logits.float(), target, weight=weight, label_smoothing=self.label_smoothing))

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        """Per epoch: accuracy, macro F1. Full: also balanced accuracy, macro precision/recall, weighted F1,
        macro one-vs-rest AUROC, expected calibration error (15 bins, L1) and, with more than 5 classes, top-5
        accuracy. update(probabilities [B, C], target [B])."""
        n = self.num_classes if self.fitted else 2
        metrics = {"accuracy": tmc.MulticlassAccuracy(num_classes=n, average="micro"),
                   "f1_macro": tmc.MulticlassF1Score(num_classes=n, average="macro")}
        if full:
            metrics.update(balanced_accuracy=tmc.MulticlassAccuracy(num_classes=n, average="macro"),
                           precision_macro=tmc.MulticlassPrecision(num_classes=n, average="macro"),
                           recall_macro=tmc.MulticlassRecall(num_classes=n, average="macro"),
                           f1_weighted=tmc.MulticlassF1Score(num_classes=n, average="weighted"),
                           auroc_macro=tmc.MulticlassAUROC(num_classes=n, average="macro"),
                           ece=tmc.MulticlassCalibrationError(num_classes=n, n_bins=CALIBRATION_BINS, norm="l1"))
            if n > TOP_K:
                metrics[f"top{TOP_K}_accuracy"] = tmc.MulticlassAccuracy(num_classes=n, average="micro", top_k=TOP_K)
        return torchmetrics.MetricCollection(metrics)

    def higher_is_better(self, metric: str) -> bool:
        return metric not in ("loss", "ece")

    def chance(self) -> dict[str, float]:
        """Accuracy and macro F1 of guessing uniformly at random: 1 / number of classes."""
        return {"accuracy": 1 / self.num_classes, "f1_macro": 1 / self.num_classes}

    def report(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """What cmeval draws and tabulates (engine/plots.py), from every row's probabilities [N, C] and class [N]:
        the confusion matrix (rows = true class), per-class precision/recall/F1/support (torchmetrics, average=None)
        and the reliability diagram's bins (mean confidence, accuracy and count per confidence bin: torchmetrics
        computes the ECE from the same bins but does not return them)."""
        n, probs, targets = self.num_classes, outputs.float(), targets.long()
        matrix = tmf.multiclass_confusion_matrix(probs, targets, num_classes=n)
        per_class = {name: fn(probs, targets, num_classes=n, average="none").tolist() for name, fn in (
            ("precision", tmf.multiclass_precision), ("recall", tmf.multiclass_recall),
            ("f1", tmf.multiclass_f1_score))}
        confidence, predicted = probs.max(dim=1)
        correct = (predicted == targets).float()
        bins = torch.clamp((confidence * CALIBRATION_BINS).long(), max=CALIBRATION_BINS - 1)
        count = torch.bincount(bins, minlength=CALIBRATION_BINS).float()
        mean = lambda values: (torch.bincount(bins, weights=values, minlength=CALIBRATION_BINS)  # noqa: E731
                               / count.clamp_min(1)).tolist()
        return {"classes": list(self.classes), "confusion_matrix": matrix.tolist(),
                "per_class": {**per_class, "support": matrix.sum(1).tolist()},
                "reliability": {"bins": CALIBRATION_BINS, "confidence": mean(confidence), "accuracy": mean(correct),
                                "count": count.long().tolist()},
                "ece": float(tmf.multiclass_calibration_error(probs, targets, num_classes=n,
                                                              n_bins=CALIBRATION_BINS, norm="l1"))}

    def outputs(self, out) -> torch.Tensor:
        """[B, C] probabilities in fp32."""
        return out.logits.float().softmax(dim=-1)

    def ranked_labels(self) -> list[str]:
        return list(self.classes)

    def top_k(self, outputs: torch.Tensor, k: int) -> pd.DataFrame:
        """top1 … topK: the K most probable labels of each row, most probable first."""
        order = outputs.topk(k, dim=1).indices.tolist()
        return pd.DataFrame({f"top{j + 1}": [self.classes[row[j]] for row in order] for j in range(k)})

    def probabilities(self, outputs: torch.Tensor, index) -> pd.DataFrame:
        return pd.DataFrame(outputs.numpy(), columns=list(self.classes), index=index)

    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        """label, predicted (the most probable class), prob_CLASS per class."""
        predicted = [self.classes[i] for i in outputs.argmax(1).tolist()]
        columns = {**label_column(frame), "predicted": predicted}
        columns.update({name: outputs[:, i].numpy() for i, name in enumerate(probability_columns(self.classes))})
        return pd.DataFrame(columns)
