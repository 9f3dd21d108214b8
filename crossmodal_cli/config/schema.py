"""The start-up checks of the config values: a composed config is checked against its settings dataclasses
(`crossmodal_cli/settings/`) and returned as plain values, one line (`KEY=VALUE: ...`) for the first mistake."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from crossmodal_cli.config.check import check_node
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings.commands import EvalSettings, PredictSettings
from crossmodal_cli.settings.run import DataSettings, RunSettings, TrainerSettings


# ---- the checks ------------------------------------------------------------------------------------------------

MISSING_HINTS = {"ckpt": "pass ckpt=PATH/TO/checkpoints/best.ckpt (a checkpoint written by cmtrain)",
                 "data.csv": "pass data.csv=NEW.csv (the rows to predict for)"}


def plain(cfg: DictConfig) -> dict:
    """The config as plain values, resolved, without the `hydra` node; one line for `???` and bad interpolations."""
    for key in OmegaConf.missing_keys(cfg):
        if key == "hydra" or key.startswith("hydra."):
            continue
        raise CrossmodalError(f"{key}: missing; {MISSING_HINTS.get(key, f'set it on the command line ({key}=…)')}")
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        return OmegaConf.to_container(body, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        detail = str(err).strip().splitlines()[0]
        raise CrossmodalError(f"{key}: cannot resolve its value ({detail})") from None


def validate_train(cfg: DictConfig, *, partial: bool = False) -> dict:
    """Check a composed cmtrain config; return it as plain values. `partial` (a stored config being resumed):
    keys that did not exist when it was written may be absent."""
    values = plain(cfg)
    check_node("", values, RunSettings, partial=partial)
    data = values["data"]
    if data["val_fraction"] + data["test_fraction"] >= 1:
        raise CrossmodalError(f"data.val_fraction={data['val_fraction']} data.test_fraction="
                              f"{data['test_fraction']}: together they must be < 1 (the rest is the training split)")
    if data["folds"] is None and data["fold"]:
        raise CrossmodalError(f"data.fold={data['fold']} needs data.folds=K (K-fold cross-validation)")
    if data["folds"] is not None and data["fold"] >= data["folds"]:
        raise CrossmodalError(f"data.fold={data['fold']}: the folds of data.folds={data['folds']} are numbered 0 to "
                              f"{data['folds'] - 1}")
    _check_files(values)
    fusion = values["fusion"]
    if isinstance(fusion.get("width"), int) and isinstance(fusion.get("heads"), int) and fusion["width"] % fusion["heads"]:
        raise CrossmodalError(f"fusion.heads={fusion['heads']}: must divide fusion.width={fusion['width']} "
                              f"(e.g. fusion.heads=4 or 8)")
    return values


def _check_files(values: dict) -> None:
    """Files and folders the config names exist (the demo CSV is generated later, so it is not checked)."""
    data = values["data"]
    if not data.get("demo"):
        for key in ("csv", "train_csv", "val_csv", "test_csv"):
            if data.get(key) and not Path(data[key]).expanduser().is_file():
                raise CrossmodalError(f"data.{key}={data[key]}: CSV file not found")
    for key, value in (("data.root", data.get("root")), ("data.text.tokenizer", data["text"].get("tokenizer"))):
        if value and not Path(value).expanduser().is_dir():
            raise CrossmodalError(f"{key}={value}: no such folder")
    teacher = (values.get("distill") or {}).get("teacher")
    if teacher and not Path(teacher).expanduser().is_file():
        raise CrossmodalError(f"distill.teacher={teacher}: checkpoint not found (pass a .ckpt written by cmtrain, "
                              f"e.g. outputs/DATE/TIME/checkpoints/best.ckpt)")
    resume = values.get("resume")
    if resume:
        path = Path(resume).expanduser()
        checkpoint = path if path.suffix == ".ckpt" else path / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise CrossmodalError(f"resume={resume}: no checkpoint at {checkpoint} (pass a run folder or a .ckpt "
                                  f"file written by cmtrain)")


def schema_of(name: str) -> Any:
    """The settings dataclass of a config group or command by its name (for docs and tests)."""
    return {"data": DataSettings, "trainer": TrainerSettings, "train": RunSettings, "eval": EvalSettings,
            "predict": PredictSettings}[name]


def validate_predict(cfg: DictConfig) -> dict:
    """Check a composed cmpredict config; return it as plain values."""
    values = plain(cfg)
    check_node("", values, PredictSettings)
    return values


def validate_eval(cfg: DictConfig) -> dict:
    """Check a composed cmeval config; return it as plain values."""
    values = plain(cfg)
    check_node("", values, EvalSettings)
    return values
