"""`distill.teacher=PATH.ckpt`: the teacher's logits for every row, and the student's task wrapped to use them.

The teacher is rebuilt from its checkpoint alone (`factory.rebuild`, as cmeval does), frozen and in eval mode, and
reads the student's CSV rows through its own input pipeline (its modalities, tokenizer, image size, sample rate),
so it may use other encoders than the student. Its logits are computed once per row, without augmentation, and
travel with the row's target ({"label", "teacher"}; `tasks/distillation.py`). Rows are matched by (CSV file,
line), so student and teacher may even read different modalities of the same file.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from crossmodal_cli.data.table import Table
from crossmodal_cli.engine.checkpoint import load_checkpoint, stored_config, task_state
from crossmodal_cli.engine.evaluation import to_device
from crossmodal_cli.engine.runtime import autocast
from crossmodal_cli.factory import rebuild
from crossmodal_cli.pipeline.data import load_data
from crossmodal_cli.pipeline.loaders import make_split_loader
from crossmodal_cli.settings.run import RunSettings
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.tasks.distillation import Distillation

log = logging.getLogger(__name__)


def check_teacher(task, path: str | Path, classes: list[str] | None = None) -> dict:
    """The teacher checkpoint, loaded; one line when distillation cannot apply (not a classification on both
    sides, or other classes than the student's, when those are known)."""
    state = load_checkpoint(Path(path).expanduser())
    if not isinstance(task, Classification):
        raise CrossmodalError(f"distill.teacher={path}: distillation needs task=classification for the student "
                              f"(got {type(task).__name__})")
    target = stored_config(state)["task"].get("_target_", "")
    if not str(target).endswith("classification.Classification"):
        raise CrossmodalError(f"distill.teacher={path}: not a classification checkpoint (its task is {target})")
    teacher_classes = task_state(state)["classes"]
    if classes is not None and list(teacher_classes) != list(classes):
        raise CrossmodalError(f"distill.teacher={path}: its classes ({', '.join(map(str, teacher_classes[:10]))}) "
                              f"differ from the student's ({', '.join(classes[:10])}); distil a teacher trained on "
                              f"the same labels")
    return state


@torch.no_grad()
def attach_teacher(cfg: RunSettings, table: Table, task: Classification, device: torch.device, precision: str,
                   num_workers: int) -> Distillation:
    """Run the teacher over every split of the student's table; put {"label", "teacher"} targets in the frames
    and return the student's (fitted) task wrapped in a Distillation."""
    path = cfg.distill.teacher
    classes = list(task.classes)
    state = check_teacher(task, path, classes)
    teacher = rebuild(state)
    teacher.model.to(device).eval()
    data = dataclasses.replace(cfg.data, columns=dataclasses.replace(
        cfg.data.columns, tabular=teacher.config.data.columns.tabular), tabular=teacher.config.data.tabular)
    rows = load_data(data, teacher.config.modalities or teacher.modalities, cfg.seed, teacher.task,
                     tabular=teacher.tabular)
    for split, frame in table.splits.items():
        if frame.empty:
            continue
        mine = rows.splits[split]
        loader = make_split_loader(rows, split, teacher.config, teacher.tokenizer, batch_size=cfg.trainer.batch_size,
                                   train=False, num_workers=num_workers, seed=cfg.seed,
                                   pin_memory=device.type == "cuda")
        logits = np.zeros((len(mine), len(classes)), dtype=np.float32)
        for batch in loader:
            batch = to_device(batch, device)
            with autocast(device, precision):
                out = teacher.model(batch["inputs"], batch.get("present"))
            logits[batch["index"].cpu().numpy()] = out.logits.float().cpu().numpy()
        by_row = dict(zip(zip(mine["source"], mine["line"]), logits))
        keys = list(zip(frame["source"], frame["line"]))
        missing = [line for (_, line), key in zip(keys, keys) if key not in by_row]
        if missing:
            raise CrossmodalError(f"distill.teacher={path}: the teacher could not read {len(missing)} {split} rows "
                                  f"the student uses (e.g. line {missing[0]}: an input of a modality only the "
                                  f"teacher reads is unusable); fix those inputs or drop the rows")
        frame = frame.copy()
        frame["target"] = [{"label": target, "teacher": by_row[key]} for target, key in zip(frame["target"], keys)]
        table.splits[split] = frame
    agreement = _agreement(table)
    log.info("distillation: teacher %s (%s) agrees with the training labels on %.1f%% of rows; alpha %g, "
             "temperature %g", path, ",".join(teacher.modalities), 100 * agreement, cfg.distill.alpha,
             cfg.distill.temperature)
    return Distillation(task, cfg.distill.alpha, cfg.distill.temperature)


def _agreement(table: Table) -> float:
    targets = table.splits["train"]["target"].tolist()
    return float(np.mean([int(np.argmax(t["teacher"])) == int(t["label"]) for t in targets]))
