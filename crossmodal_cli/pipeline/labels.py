"""The task's side of reading a table: which label columns to read, how labels are refused and stratified, the
task fitted on the training split, and each split's `target` column.

`data/` knows no tasks (`data.table.load_table` takes the label columns and the two label callables as plain
values, `LabelColumns`); this module hands it the task's, then turns labels into targets, in the order load_table
did when it held the task: labels refused per file before the split, the task fitted on the finished training
split (unless a checkpoint's task already is), then targets made split by split.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from crossmodal_cli.data.table import LabelColumns, Table, check_on_missing, load_table
from crossmodal_cli.tasks.base import Task


def label_columns(task: Task, columns: Mapping[str, Any]) -> LabelColumns:
    """The task's label column(s) ({canonical column: configured header}), label check and split strata."""
    return LabelColumns(columns=task.label_columns(columns), check=task.check_labels, strata=task.strata)


def read_labelled(task: Task, *, columns: Mapping[str, Any], labels_needed: bool = True,
                  classes: Sequence[str] | None = None, on_missing: str = "error", **table_args: Any) -> Table:
    """`load_table(**table_args)` with the task's label columns, then each split's `target` column.

    `classes` fixes a classification vocabulary (the task is then fitted). A task that is not fitted yet is fitted
    on the training split. A label the task cannot use is an error with `on_missing=error`; otherwise (drop,
    zero: a row without a usable target cannot be kept) those rows are dropped and counted in
    `Table.report[split]["unknown_label"]`. `labels_needed=False` (cmpredict): no label column is read or
    required, and every row's target is 0.
    """
    check_on_missing(on_missing)
    if classes is not None:
        task.load_state({"classes": list(classes)})
    labels = label_columns(task, columns) if labels_needed else None
    table = load_table(columns=columns, labels=labels, on_missing=on_missing, **table_args)
    if not labels_needed:
        table.splits = {s: f.assign(target=0) for s, f in table.splits.items()}
        return table
    if not task.fitted:
        task.fit(table.splits["train"], table.headers)
    for split in list(table.splits):
        table.splits[split], dropped = task.targets(table.splits[split], split, on_missing, table.headers)
        if dropped:
            table.report[split] = {"unknown_label": dropped}
    return table
