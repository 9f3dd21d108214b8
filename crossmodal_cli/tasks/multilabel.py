"""Multi-label classification: each row has a set of labels (tags) written in one cell, joined by `separator`.

A blank cell (or a missing-value marker such as NaN) is the empty set. The head gives one logit per label; the loss
is binary cross-entropy per label (`pos_weight=balanced`: each label's positives weighted by negatives/positives
in the training split). The decision threshold (one for all labels) is tuned on the validation split at the end
of training (the value in [0.05, 0.95] with the best micro F1) and stored with the label vocabulary, so cmeval and
predictions use it; until then it is 0.5. The monitored metric, macro average precision (`map`), needs no
threshold.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torchmetrics
from torch import nn
from torchmetrics import classification as tmc

from crossmodal_cli.data.csvfile import describe_rows, printable
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task, drop_or_refuse, label_column, probability_columns, require_fitted
from crossmodal_cli.tasks.classification import class_names, missing_labels

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


class MultiLabel(Task):
    """Labels joined by `separator` in one column -> multi-hot targets [B, L]; sigmoid / BCE; tuned threshold."""

    monitor = "map"

    def __init__(self, separator: str = "|", pos_weight: str | None = None, threshold: float = 0.5):
        if not separator:
            raise CrossmodalError("task.separator: must not be empty (e.g. '|' or ';')")
        if pos_weight not in (None, "balanced"):
            raise CrossmodalError(f"task.pos_weight={pos_weight}: use null or balanced")
        self.separator, self.pos_weight_mode, self.threshold = separator, pos_weight, float(threshold)
        self.classes: list[str] = []
        self.pos_weight: list[float] | None = None
        self._from_train = True

    # ---- labels ----------------------------------------------------------------------------------------------

    def split_labels(self, labels: pd.Series) -> list[list[str]]:
        """Each cell as its list of labels (stripped, empty parts and repeats removed); blank / NaN -> []."""
        empty = missing_labels(labels)
        return [[] if none else list(dict.fromkeys(p.strip() for p in cell.split(self.separator) if p.strip()))
                for cell, none in zip(labels.tolist(), empty.tolist())]

    @property
    def fitted(self) -> bool:
        return bool(self.classes)

    def strata(self, frame: pd.DataFrame) -> pd.Series:
        """The first label of each row ('' for none): every label that comes first somewhere keeps its share."""
        return pd.Series([labels[0] if labels else "" for labels in self.split_labels(frame["label"])],
                         index=frame.index)

    def fit(self, train: pd.DataFrame, headers: Mapping[str, str]) -> None:
        sets = self.split_labels(train["label"])
        classes = class_names(pd.Series([label for labels in sets for label in labels], dtype=object))
        if len(classes) < 2:
            found = f"only '{printable(classes[0], 40)}'" if classes else "no label"
            raise CrossmodalError(f"{train['source'].iloc[0]}: column '{printable(headers['label'], 60)}' has {found} "
                                  f"in the training rows; multi-label needs two or more labels, each row's joined by "
                                  f"task.separator='{self.separator}' (one yes/no label: task=classification)")
        self.classes = classes
        if self.pos_weight_mode == "balanced":
            counts = pd.Series([label for labels in sets for label in labels]).value_counts()
            self.pos_weight = [(len(sets) - int(counts[c])) / int(counts[c]) for c in classes]

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        """Multi-hot float32 vectors; a label outside the vocabulary: error (on_missing=error) or the row dropped."""
        require_fitted(self)
        index = {name: i for i, name in enumerate(self.classes)}
        sets = self.split_labels(frame["label"])
        unknown = pd.Series([any(label not in index for label in labels) for labels in sets], index=frame.index)
        where = "the training split" if self._from_train else "the checkpoint's label vocabulary"
        refusal = ""
        if unknown.any():
            first = next(label for labels in sets for label in labels if label not in index)
            refusal = (f"{frame.loc[unknown, 'source'].iloc[0]}: label '{printable(first, 60)}' in the {split} split "
                       f"is not in {where} ({describe_rows(frame[unknown])}); known labels: "
                       f"{', '.join(printable(c, 40) for c in self.classes[:20])}"
                       f"{', ...' if len(self.classes) > 20 else ''} (fix the labels, or set data.on_missing=drop "
                       f"to skip those rows)")
        kept_sets = [labels for labels, bad in zip(sets, unknown.tolist()) if not bad]
        frame, dropped = drop_or_refuse(frame, unknown, split, on_missing,
                                        f"with a label that is not in {where}", refusal)
        hot = np.zeros((len(kept_sets), len(self.classes)), dtype=np.float32)
        for row, labels in enumerate(kept_sets):
            hot[row, [index[label] for label in labels]] = 1.0
        frame = frame.copy()
        frame["target"] = list(hot)
        return frame, dropped

    def describe(self) -> str:
        return f"{len(self.classes)} labels (multi-label, threshold {self.threshold:g})"

    def state(self) -> dict:
        return {"classes": list(self.classes), "pos_weight": self.pos_weight, "threshold": self.threshold}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.classes = [str(c) for c in state["classes"]]
        self.pos_weight, self.threshold = state.get("pos_weight"), float(state.get("threshold", 0.5))
        self._from_train = False

    # ---- model side ------------------------------------------------------------------------------------------

    def head(self, in_dim: int) -> nn.Module:
        require_fitted(self)
        return nn.Linear(in_dim, len(self.classes))

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = torch.tensor(self.pos_weight, device=target.device) if self.pos_weight else None
        return self.main_and_aux(out, lambda logits: nn.functional.binary_cross_entropy_with_logits(
            logits.float(), target.float(), pos_weight=weight))

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        """Per epoch: macro mAP, micro F1. Full: also macro F1, subset accuracy (every label right) and Hamming
        loss (share of wrong label decisions; lower is better). update(probabilities [B, L], targets [B, L])."""
        n, t = len(self.classes) if self.fitted else 2, self.threshold
        metrics = {"map": tmc.MultilabelAveragePrecision(num_labels=n, average="macro"),
                   "f1_micro": tmc.MultilabelF1Score(num_labels=n, average="micro", threshold=t)}
        if full:
            metrics.update(f1_macro=tmc.MultilabelF1Score(num_labels=n, average="macro", threshold=t),
                           subset_accuracy=tmc.MultilabelExactMatch(num_labels=n, threshold=t),
                           hamming_loss=tmc.MultilabelHammingDistance(num_labels=n, threshold=t))
        return torchmetrics.MetricCollection(metrics)

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.long()

    def outputs(self, out) -> torch.Tensor:
        """[B, L] per-label probabilities in fp32."""
        return out.logits.float().sigmoid()

    def tune(self, outputs: torch.Tensor, targets: torch.Tensor) -> bool:
        """Set the threshold to the one of THRESHOLDS with the best micro F1 on (validation) outputs (of several
        equally good, the middle one); True if the stored state changed."""
        targets = targets.bool()
        scores = []
        for t in THRESHOLDS:
            predicted = outputs >= t
            tp = (predicted & targets).sum().item()
            scores.append(2 * tp / max(predicted.sum().item() + targets.sum().item(), 1))
        tied = THRESHOLDS[np.isclose(scores, max(scores))]
        best = float(tied[len(tied) // 2])  # the middle of the best range: furthest from where F1 drops
        changed, self.threshold = best != self.threshold, best
        return changed

    def probabilities(self, outputs: torch.Tensor, index) -> pd.DataFrame:
        return pd.DataFrame(outputs.numpy(), columns=list(self.classes), index=index)

    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        """label, predicted (the labels at or above the threshold, joined by the separator), prob_LABEL each."""
        chosen = (outputs >= self.threshold).numpy()
        predicted = [self.separator.join(c for c, on in zip(self.classes, row) if on) for row in chosen]
        columns = {**label_column(frame), "predicted": predicted}
        columns.update({name: outputs[:, i].numpy() for i, name in enumerate(probability_columns(self.classes))})
        return pd.DataFrame(columns)

    def higher_is_better(self, metric: str) -> bool:
        return metric not in ("loss", "hamming_loss")
