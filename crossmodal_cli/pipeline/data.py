"""The data a run reads: the demo set generated when configured, the CSV(s) read, split and checked, every file
they name checked, the task's targets made. Shared by cmtrain, cmeval, cmpredict, distillation and the API."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import yaml

from crossmodal_cli.data.demo import ensure_demo
from crossmodal_cli.data.columns import TABULAR
from crossmodal_cli.data.table import SPLITS, Table
from crossmodal_cli.data.tabular import TabularOptions, TabularPreprocessor, describe_unknown
from crossmodal_cli.data.tabular_batch import attach
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.paths import config_dir
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.settings.run import DataSettings
from crossmodal_cli.tasks.base import Task
from crossmodal_cli.tasks.classification import Classification

log = logging.getLogger(__name__)
PATH_KEYS = ("csv", "train_csv", "val_csv", "test_csv", "root")


def absolute_data_paths(data: DataSettings) -> DataSettings:
    """The data settings with their paths absolute (relative to the working directory), so a checkpoint's stored
    config finds its data from any folder."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    changes = {key: absolute(getattr(data, key)) for key in PATH_KEYS}
    if data.demo:
        changes["demo"] = dataclasses.replace(data.demo, folder=absolute(data.demo.folder))
    if data.text.tokenizer:
        changes["text"] = dataclasses.replace(data.text, tokenizer=absolute(data.text.tokenizer))
    return dataclasses.replace(data, **changes)


def default_columns() -> dict:
    """data.columns as configs/data/csv.yaml names them: a name that differs was set by the user and must exist
    in the CSV as written (a default one may differ in case)."""
    return yaml.safe_load((Path(config_dir()) / "data" / "csv.yaml").read_text())["columns"]


def load_data(data: DataSettings, modalities: Sequence[str] | None, seed: int, task: Task | None = None,
              keep: Sequence[str] = SPLITS, labels_needed: bool = True,
              frames: Mapping[str, pd.DataFrame] | None = None, tabular: TabularPreprocessor | None = None) -> Table:
    """Generate the demo data if configured, then read, split and check the CSV(s) and every file they name;
    the task (default: classification) turns the labels into targets, fitted on the training split unless it
    already is (a checkpoint's task); likewise the tabular preprocessing (`tabular`: a checkpoint's), whose inputs
    join each split's frame (`tabular_batch.attach`). `frames` ({role: DataFrame}, the Python API) are read in
    place of CSVs."""
    files = ", ".join(f"{key}={getattr(data, key)}" for key in ("csv", "train_csv", "val_csv", "test_csv")
                      if getattr(data, key))
    log.info("data: %s; separator %s; on_missing=%s", files or "no CSV set", repr(data.separator), data.on_missing)
    log.info("data inputs: image %s px, resize %s, augment %s; text max %d tokens; audio %s Hz, %s s",
             data.image_size if data.image_size is not None else "(the encoder's)",
             data.resize or "(the encoder's)", data.augment, data.text.max_length,
             data.audio.sample_rate if data.audio.sample_rate is not None else "(the encoder's)",
             data.audio.seconds)
    if data.demo:
        ensure_demo(data.demo.folder, num_samples=data.demo.num_samples, seed=data.demo.seed,
                    image_size=data.image_size, sample_rate=data.audio.sample_rate, seconds=data.audio.seconds)
    columns = dataclasses.asdict(data.columns)
    defaults = default_columns()
    explicit = {key for key, name in columns.items() if name is not None and name != defaults.get(key)}
    task = task if task is not None else Classification()
    table = read_labelled(task, csv=data.csv, train_csv=data.train_csv, val_csv=data.val_csv, test_csv=data.test_csv,
                          root=data.root, columns=columns, modalities=modalities, val_fraction=data.val_fraction,
                          test_fraction=data.test_fraction, seed=seed, keep=keep, on_missing=data.on_missing,
                          explicit=explicit, separator=data.separator, labels_needed=labels_needed, frames=frames,
                          folds=(data.folds, data.fold) if data.folds else None,
                          tabular_as_text=data.tabular.as_text)
    table.report = check_inputs(table, columns, data.on_missing, allow_outside_root=data.allow_outside_root,
                                cache_dir=data.validation_cache)
    if "tabular" in table.modalities:
        prepare_tabular(table, data, tabular)
    sizes = ", ".join(f"{s} {len(f)}" for s, f in table.splits.items())
    folds = f" (val: fold {data.fold} of data.folds={data.folds})" if data.folds and "val" in table.splits else ""
    log.info("data: %s rows%s; %s; modalities %s", sizes, folds,
             task.describe() if labels_needed else "no labels read", ",".join(table.modalities))
    return table


def tabular_options(data: DataSettings) -> TabularOptions:
    """data.columns.tabular and data.tabular as the preprocessing's plain options."""
    return TabularOptions(columns=[str(c) for c in data.columns.tabular],
                          categorical=[str(c) for c in data.tabular.categorical],
                          numeric=[str(c) for c in data.tabular.numeric], transform=data.tabular.transform,
                          transforms={str(k): v for k, v in (data.tabular.transforms or {}).items()},
                          min_count=data.tabular.min_count)


def prepare_tabular(table: Table, data: DataSettings, fitted: TabularPreprocessor | None) -> None:
    """Fit the tabular preprocessing on the training split (unless `fitted`, a checkpoint's), log what it found,
    and attach every split's inputs to its frame; categories outside the vocabulary are counted and logged."""
    def name(frame: pd.DataFrame) -> str:
        return str(frame["source"].iloc[0]) if len(frame) else "the data"

    pre = fitted
    if pre is None:
        pre = TabularPreprocessor.fit(table.splits["train"], tabular_options(data), name(table.splits["train"]),
                                      prefix=TABULAR)
        for column, report in pre.report().items():
            log.info("tabular column %s", describe_column(column, report))
    for split, frame in table.splits.items():
        arrays = pre.transform(frame, name(frame), prefix=TABULAR)
        for line in describe_unknown(arrays.unknown, split):
            log.info(line)
        table.splits[split] = attach(frame, arrays, pre)
    table.tabular = pre


def describe_column(column: str, report: Mapping) -> str:
    """One log line's worth on a fitted column, e.g. "'price': numeric (log), 0.5 .. 980, 3 blank" or
    "'brand': categorical, 12 categories (top: acme 40), 1 blank"."""
    blank = f", {report['missing']} blank" if report["missing"] else ""
    if report["type"] == "numeric":
        return f"'{column}': numeric ({report['transform']}), {report['min']:g} .. {report['max']:g}{blank}"
    top = ", ".join(f"{value} {count}" for value, count in report["top"][:3])
    rare = f", {report['unknown']} training cells rarer than data.tabular.min_count" if report["unknown"] else ""
    return f"'{column}': categorical, {report['categories']} categories (top: {top}){rare}{blank}"
