"""Where numbers go: metrics.jsonl (one line per epoch), metrics.json, TensorBoard, a PNG of the curves, the log."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, tensors and numpy scalars become floats."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename), so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(data), indent=2) + "\n")
    os.replace(tmp, path)


def format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _short(value: Any) -> str:
    """4 significant digits, so every number fits in a few characters (0.9123, 1.235e-04, 38.7)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def epoch_line(record: Mapping[str, Any], max_epochs: int | None = None) -> str:
    """One epoch in a terminal-width line: `epoch 3/10 train 0.512 | val loss 0.498 accuracy 0.912 | lr 9.1e-04
    12.3 s 68/s` (every value is also in metrics.jsonl at full precision)."""
    val = " ".join(f"{k[4:]} {_short(v)}" for k, v in record.items() if k.startswith("val/") and v is not None)
    of = f"/{max_epochs}" if max_epochs else ""
    skipped = f" skipped {record['skipped_steps']}" if record.get("skipped_steps") else ""
    return (f"epoch {record['epoch']}{of} train {_short(record.get('train/loss'))} | val {val} | "
            f"lr {record.get('lr', 0):.2e} {record.get('seconds', 0):.1f} s "
            f"{record.get('samples_per_second', 0):.0f}/s{skipped}")


def metrics_table(results: Mapping[str, Mapping[str, float] | None]) -> str:
    """A compact text table: one row per metric, one column per split (the full metric set stays narrow)."""
    splits = {split: m for split, m in results.items() if m}
    names = sorted({k for m in splits.values() for k in m})
    width = max([len("metric"), *(len(n) for n in names)])
    lines = [f"{'metric':<{width}}" + "".join(f"{split:>10}" for split in splits)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f"{_cell(m.get(name)):>10}" for m in splits.values()))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def run_hparams(cfg) -> dict:  # cfg: settings.run.RunSettings
    """The values that tell the runs of a sweep apart, for TensorBoard's HParams tab: the chosen config of each
    group (by its class name), the optimisation settings and the seed."""
    name = lambda node: str(node.get("_target_", "")).rsplit(".", 1)[-1] if node is not None else "none"  # noqa: E731
    values = {"seed": cfg.seed, "task": name(cfg.task), "fusion": name(cfg.fusion),
              "modalities": ",".join(cfg.modalities or []), "optimizer": name(cfg.optimizer),
              "lr": cfg.optimizer.get("lr"), "weight_decay": cfg.optimizer.get("weight_decay"),
              "scheduler": name(cfg.scheduler)}
    for m in cfg.modalities or []:
        values[f"encoder/{m}"] = name(cfg.encoder[m])
    for key in ("batch_size", "max_epochs", "accumulate_grad_batches", "modality_dropout", "precision"):
        values[f"trainer/{key}"] = getattr(cfg.trainer, key)
    return {k: v for k, v in values.items() if v is not None}


class RunReporter:
    """Appends epoch records to metrics.jsonl and TensorBoard; the final metrics and hyper-parameters to TensorBoard
    (`final`); draws curves.png at the end."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_epoch: int | None = None,
                 resume_step: int | None = None, monitor: str | None = None, monitor_mode: str = "max",
                 chance: Mapping[str, float] | None = None):
        """With resume_epoch/resume_step, records from that epoch/step on (written after the checkpoint a run
        resumes from) are removed, so the resumed run's records replace them. `monitor` (e.g. "val/accuracy")
        and `monitor_mode` mark the best epoch in curves.png; `chance` ({metric: value}) draws chance levels."""
        self.run_dir = Path(run_dir)
        self.monitor, self.monitor_mode, self.chance = monitor, monitor_mode, dict(chance or {})
        self.jsonl = self.run_dir / "metrics.jsonl"
        if resume_epoch is not None and self.jsonl.is_file():
            kept = [line for line in self.jsonl.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < resume_epoch]
            tmp = self.jsonl.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.jsonl)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=resume_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def epoch(self, record: Mapping[str, Any], max_epochs: int | None = None) -> None:
        """One line per epoch: epoch, step, train/loss, val/*, seconds, samples_per_second, lr."""
        with self.jsonl.open("a") as f:
            f.write(json.dumps(_plain(record)) + "\n")
        self.scalars({**{k: v for k, v in record.items() if "/" in k and isinstance(v, (int, float))},
                      "train/samples_per_second": record.get("samples_per_second", 0.0)}, record["step"])
        log.info("%s", epoch_line(record, max_epochs))

    def final(self, results: Mapping[str, Any], hparams: Mapping[str, Any], step: int) -> None:
        """The best checkpoint's val/test metrics as `final/SPLIT/NAME` scalars, and the run's hyper-parameters
        with those metrics (add_hparams), so the runs of a sweep line up in TensorBoard's HParams tab."""
        if self.writer is None:
            return
        metrics = {f"final/{split}/{name}": float(value) for split in ("val", "test")
                   for name, value in (results.get(split) or {}).items()
                   if isinstance(value, (int, float)) and math.isfinite(value)}
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self.writer.add_hparams(values, metrics, run_name=".", global_step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.plot()

    def plot(self) -> None:
        """curves.png: train/val loss (log scale when positive) and every other val metric per epoch, with the
        best epoch of the monitored metric marked and the task's chance levels drawn."""
        if not self.jsonl.is_file():
            return
        records = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        if not records:
            return
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in records]
        others = sorted({k for r in records for k in r if k.startswith("val/") and k != "val/loss"})
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        losses = []
        for key in ("train/loss", "val/loss"):
            values = [r.get(key) for r in records]
            losses += [v for v in values if v is not None]
            axes[0].plot(epochs, values, marker="o", label=key)
        if losses and min(losses) > 0:
            axes[0].set_yscale("log")
        for key in others:
            axes[1].plot(epochs, [r.get(key) for r in records], marker="o", label=key)
        levels: dict[float, list[str]] = {}  # one line per chance value, naming the metrics it applies to
        for metric, value in self.chance.items():
            if f"val/{metric}" in others:
                levels.setdefault(round(value, 6), []).append(metric)
        for value, metrics in levels.items():
            axes[1].axhline(value, color="black", linestyle=":", linewidth=1,
                            label=f"chance {', '.join(metrics)} ({value:.3g})")
        best = self._best_epoch(records)
        if best is not None:
            for ax in axes:
                ax.axvline(best, color="grey", linestyle="--", linewidth=1)
            axes[1].plot([], [], color="grey", linestyle="--", label=f"best {self.monitor} (epoch {best})")
        for ax, title in zip(axes, ("loss" + (" (log scale)" if axes[0].get_yscale() == "log" else ""),
                                    "validation metrics")):
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.run_dir / "curves.png", dpi=100)
        plt.close(fig)

    def _best_epoch(self, records: list[dict]) -> int | None:
        """The epoch best.ckpt comes from: the first with the best monitored value (as the loop chooses it)."""
        scored = [(r[self.monitor], r["epoch"]) for r in records if self.monitor and r.get(self.monitor) is not None]
        if not scored:
            return None
        best = max(v for v, _ in scored) if self.monitor_mode == "max" else min(v for v, _ in scored)
        return next(epoch for value, epoch in scored if value == best)
