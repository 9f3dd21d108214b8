"""The Python API: `fit` trains like `cmtrain`, `load` gives a trained model that predicts, evaluates and embeds
like `cmpredict` and `cmeval`, on a CSV or on a pandas DataFrame.

    from crossmodal_cli import fit, load
    run = fit("data.csv", overrides=["fusion=gated", "trainer.max_epochs=5"], run_dir="outputs/x")
    model = load(run.dir)
    model.predict(df)          # the columns of cmpredict's predictions.csv
    model.predict_proba(df)    # one column per class (classification, multi-label)
    model.evaluate(df)         # the task's full metrics, as cmeval gives them
    model.embed(df)            # what cmpredict's embeddings.npz holds

`fit` composes the same Hydra configs with the same overrides, runs the same checks (mistakes raise the package's
`CrossmodalError` with cmtrain's one-line message) and writes the same run folder (all but Hydra's own
.hydra/hydra.yaml), so both give identical results for the same overrides and seed. A DataFrame given to `fit` is written into the run folder (`data.csv`, with
in-memory images and audio as files under `inputs/`), so the run can be resumed and its checkpoint evaluated later.
In the DataFrames given to `predict`, `evaluate` and `embed`, image cells may be paths, encoded bytes or
`PIL.Image` objects and audio cells paths or bytes; nothing is written for them. Relative paths resolve against
`root` (default: the working directory); absolute ones need no flag: the caller is a program, not a CSV from
elsewhere. Importing this module imports no torch; the first call does.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format, as cmtrain writes


@dataclass(frozen=True)
class Run:
    """A finished training run: its folder, what metrics.json holds, and its best checkpoint."""

    dir: Path
    metrics: dict

    @property
    def best_checkpoint(self) -> Path:
        return self.dir / "checkpoints" / "best.ckpt"


def fit(data: str | Path | pd.DataFrame | None = None, overrides: Sequence[str] = (),
        run_dir: str | Path | None = None) -> Run:
    """Train as `cmtrain OVERRIDES` does, into `run_dir` (default outputs/DATE/TIME, as cmtrain). `data`: a CSV path
    (= `data=csv data.csv=PATH`), a DataFrame with the CSV's columns, or None for what the overrides select (the
    demo data by default)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from crossmodal_cli.config.startup import check_new_run, check_train
    from crossmodal_cli.paths import config_dir

    now = dt.datetime.now()
    run_dir = Path(run_dir) if run_dir is not None else Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime(
        "%H-%M-%S")
    check_new_run(run_dir)
    given = _data_overrides(data, run_dir)
    arguments = [*given, *overrides]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        try:
            cfg = compose("train", overrides=arguments)
        except Exception as err:  # Hydra's own errors: an unknown group or key, a malformed override
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CrossmodalError(f"overrides: {first}") from None
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    settings = check_train(cfg)
    from crossmodal_cli.training import run_training

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(arguments))))
    with _log_file(run_dir / "train.log"):
        metrics = run_training(settings, run_dir)
    return Run(run_dir, json.loads(json.dumps(metrics)))


def _data_overrides(data: Any, run_dir: Path) -> list[str]:
    """The overrides that read `data`: a CSV path as given; a DataFrame written to RUN/data.csv first."""
    if data is None:
        return []
    if isinstance(data, pd.DataFrame):
        from crossmodal_cli.pipeline.materialise import write_frame

        csv = write_frame(data, run_dir)
        return ["data=csv", f"data.csv={_quoted(csv)}", f"data.root={_quoted(Path.cwd())}",
                "data.allow_outside_root=true"]
    if isinstance(data, (str, Path)):
        return ["data=csv", f"data.csv={_quoted(Path(data).expanduser().resolve())}"]
    raise CrossmodalError(f"fit: data must be a CSV path or a pandas DataFrame, got {type(data).__name__}")


def _quoted(path: Path) -> str:
    """A path as a Hydra override value (quoted: a path may hold = , or spaces)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


class _log_file:
    """The run's log file (train.log, as cmtrain's Hydra job logging writes it) while `fit` trains."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.logger = logging.getLogger("crossmodal_cli")

    def __enter__(self):
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.handler.close()


def load(path: str | Path, device: str = "auto", precision: str = "auto", batch_size: int | None = None,
         num_workers: int | str = 0) -> "Model":
    """A trained model from a run folder (its checkpoints/best.ckpt) or a .ckpt file, on `device` (auto: a GPU
    when there is one)."""
    from crossmodal_cli.engine.checkpoint import load_checkpoint
    from crossmodal_cli.factory import rebuild
    from crossmodal_cli.inference import Predictor

    path = Path(path).expanduser()
    checkpoint = path if path.suffix == ".ckpt" else path / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        raise CrossmodalError(f"{path}: no checkpoint at {checkpoint} (pass a run folder written by cmtrain or fit, "
                              f"or a .ckpt file)")
    predictor = Predictor.place(rebuild(load_checkpoint(checkpoint)), device, precision, batch_size, num_workers)
    return Model(predictor, checkpoint.resolve())


class Model:
    """A trained checkpoint ready to predict. Each method takes a DataFrame (or a CSV path) with the checkpoint's
    input columns. Each also takes `columns` ({data.columns key: the name in `data`}, for other names), `root` (what
    relative paths resolve against; default: the working directory for a DataFrame, the CSV's folder for a CSV)
    and `on_missing` (rows with unusable inputs: error, drop or zero; default: the checkpoint's data.on_missing)."""

    def __init__(self, predictor, checkpoint: Path):
        self.predictor, self.checkpoint = predictor, checkpoint

    @property
    def task(self):
        return self.predictor.rebuilt.task

    @property
    def modalities(self) -> list[str]:
        return list(self.predictor.rebuilt.modalities)

    def predict(self, data, top_k: int = 0, *, columns: Mapping[str, str] | None = None, root: str | None = None,
                on_missing: str | None = None) -> pd.DataFrame:
        """The columns cmpredict writes: row, source, line, the inputs, then the task's (label, predicted,
        prob_CLASS, ...; `top_k` adds the K most probable labels)."""
        from crossmodal_cli.inference import check_top_k

        check_top_k(self.task, top_k, self.predictor.rebuilt.config.task["_target_"])
        rows = self._rows(data, False, columns, root, on_missing)
        return self.predictor.predict(rows, "test", top_k=top_k)[0]

    def predict_proba(self, data, *, columns: Mapping[str, str] | None = None, root: str | None = None,
                      on_missing: str | None = None) -> pd.DataFrame:
        """Classification and multi-label: one column per class (named by the class), one row per predicted row;
        the index is the row's position in a DataFrame, its line in a CSV (rows dropped by on_missing=drop are
        absent, the others keep their index)."""
        from crossmodal_cli.data.csvfile import FIRST_ROW_LINE

        table = self._rows(data, False, columns, root, on_missing)
        rows, values, _ = self.predictor.run(self.predictor.loader(table, "test"))
        lines = table.splits["test"]["line"].to_numpy()[rows]
        return self.task.probabilities(values, index=lines - FIRST_ROW_LINE if isinstance(data, pd.DataFrame)
                                       else lines)

    def evaluate(self, data, *, columns: Mapping[str, str] | None = None, root: str | None = None,
                 on_missing: str | None = None) -> dict:
        """The task's full metrics on labelled rows: the numbers cmeval gives for the same rows."""
        from crossmodal_cli.inference import evaluate_split

        return evaluate_split(self.predictor, self._rows(data, True, columns, root, on_missing), "test")[0]

    def embed(self, data, *, columns: Mapping[str, str] | None = None, root: str | None = None,
              on_missing: str | None = None) -> dict:
        """{"row", "fused", "pooled/MODALITY", the task's own}: arrays, what cmpredict's embeddings.npz holds."""
        return self.predictor.predict(self._rows(data, False, columns, root, on_missing), "test", embeddings=True)[1]

    def _rows(self, data, labels: bool, columns, root, on_missing):
        from crossmodal_cli.inference import rows_for

        return rows_for(self.predictor, data, labels_needed=labels, columns=columns, root=root, on_missing=on_missing)
