"""Modality importance: how much a trained model loses when a modality is missing.

The split is evaluated again with each modality removed in turn (and, with three or more, each pair), removed
through the model's own missing-modality masks (`present[m] = False`: the fusion ignores it exactly as it ignores
an unusable input or a modality hidden by `trainer.modality_dropout` in training). The drop of each per-epoch metric
of the task (classification: accuracy and macro F1) is the value with every modality present minus the value
without (the other way round for metrics where lower is better), so a positive drop always means "worse without".

A model trained with `trainer.modality_dropout=0` never saw a modality missing: its drop measures the modality's
contribution *and* the shock of an input pattern it never met, and the report says so. The fusion's own view is
added where it has one: learned modality weights (`weighted`, `late` with combine=learned) and the mean gate value
per modality over the split (`gated`).

Tabular columns are ranked the same way, one at a time (`columns` in the report): a column is removed by making
every row's cell blank (its learned missing embedding: numeric_present False, categorical id 0), which is how
the model sees a blank cell in training, so a model trained with blanks in a column meets nothing unseen.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping, Sequence

import torch

from crossmodal_cli.data.tabular_columns import MISSING_ID
from crossmodal_cli.engine.evaluation import evaluate
from crossmodal_cli.model import MultimodalModel


class WithoutModalities:
    """A loader's batches with `removed` marked missing in every row (present[m] all False)."""

    def __init__(self, loader: Iterable, removed: Sequence[str]):
        self.loader, self.removed = loader, list(removed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            present = dict(batch["present"])
            for m in self.removed:
                present[m] = torch.zeros_like(present[m])
            yield {**batch, "present": present}


class WithoutColumn:
    """A loader's batches with one tabular column blank in every row: `kind` "numeric" or "categorical", `j` its
    position among the columns of that kind."""

    def __init__(self, loader: Iterable, kind: str, j: int):
        self.loader, self.kind, self.j = loader, kind, j

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            tabular = dict(batch["inputs"]["tabular"])
            if self.kind == "numeric":
                tabular["numeric_present"] = tabular["numeric_present"].clone()
                tabular["numeric_present"][:, self.j] = False
                tabular["numeric"] = tabular["numeric"].clone()
                tabular["numeric"][:, self.j] = 0.0
            else:
                tabular["categorical"] = tabular["categorical"].clone()
                tabular["categorical"][:, self.j] = MISSING_ID
            yield {**batch, "inputs": {**batch["inputs"], "tabular": tabular}}


def removals(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Each modality alone and, with three or more, each pair; never all of them (nothing would be left)."""
    sets = [(m,) for m in modalities]
    if len(modalities) >= 3:
        sets += [pair for pair in itertools.combinations(modalities, 2)]
    return [s for s in sets if len(s) < len(modalities)]


def modality_importance(model: MultimodalModel, loader, task, device: torch.device, precision: str,
                        modalities: Sequence[str], all_present: Mapping[str, float], *, split: str, rows: int,
                        modality_dropout: float, columns: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The report modality_importance.json holds (see the module docstring); `all_present` are the split's metrics
    with every modality (from the same evaluation cmeval reports); `columns` ({"numeric": [...], "categorical":
    [...]}, the fitted tabular columns) adds each column's drop."""
    names = [m for m in task.metric_names() if m in all_present]

    def without(batches) -> dict:
        metrics, _ = evaluate(model, batches, task, device, precision)
        return {"metrics": {m: metrics[m] for m in names},
                "drop": {m: (all_present[m] - metrics[m]) * (1 if task.higher_is_better(m) else -1) for m in names}}

    removed = {"+".join(subset): without(WithoutModalities(loader, subset)) for subset in removals(modalities)}
    report = {"split": split, "rows": rows, "metrics": names, "all_present": {m: all_present[m] for m in names},
              "removed": removed}
    if columns:
        report["columns"] = {column: without(WithoutColumn(loader, kind, j))
                             for kind, names_of_kind in columns.items() for j, column in enumerate(names_of_kind)}
    report.update({
        "modality_dropout": modality_dropout, "trained_with_missing": modality_dropout > 0,
        "note": ("trained with trainer.modality_dropout={:g}: the model learned to work with modalities missing, so "
                 "a drop measures what the modality adds".format(modality_dropout) if modality_dropout > 0 else
                 "trained with trainer.modality_dropout=0: the model never saw a modality missing, so a drop also "
                 "measures the shock of an unseen input pattern; train with e.g. trainer.modality_dropout=0.3 for "
                 "drops that measure only what each modality adds")})
    fusion = model.fusion
    weights = fusion.summary() if fusion is not None else {}
    if weights:
        report["fusion_weights"] = weights
    if fusion is not None and fusion.has_gates:
        report["mean_gates"] = mean_gates(model, loader, device, precision)
    return report


@torch.no_grad()
def mean_gates(model: MultimodalModel, loader, device: torch.device, precision: str) -> dict[str, float]:
    """{"gate/MODALITY": mean gate value over the split's rows} for a gated fusion (it keeps its last gates)."""
    from crossmodal_cli.engine.evaluation import to_device
    from crossmodal_cli.engine.runtime import autocast

    model.eval()
    total, rows = None, 0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            model(batch["inputs"], batch.get("present"))
        gates = model.fusion.last_gates.float()                                          # [B, M]
        total = gates.sum(0) if total is None else total + gates.sum(0)
        rows += gates.shape[0]
    return {f"gate/{m}": float(v) / max(rows, 1) for m, v in zip(model.fusion.modalities, total.tolist())}
