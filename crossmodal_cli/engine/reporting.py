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
    """A small text table: one row per split, one column per metric."""
    rows = {split: m for split, m in results.items() if m}
    names = sorted({k for m in rows.values() for k in m})
    widths = [max(10, len(n)) + 2 for n in names]
    lines = [f"{'split':<8}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for split, m in rows.items():
        lines.append(f"{split:<8}" + "".join(f"{_cell(m.get(n)):>{w}}" for n, w in zip(names, widths)))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


class RunReporter:
    """Appends epoch records to metrics.jsonl and TensorBoard; draws curves.png at the end."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_epoch: int | None = None,
                 resume_step: int | None = None):
        """With resume_epoch/resume_step, records from that epoch/step on (written after the checkpoint a run
        resumes from) are removed, so the resumed run's records replace them."""
        self.run_dir = Path(run_dir)
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
        self.scalars({k: v for k, v in record.items() if "/" in k and isinstance(v, (int, float))}, record["step"])
        log.info("%s", epoch_line(record, max_epochs))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.plot()

    def plot(self) -> None:
        """curves.png: train/val loss and every other val metric per epoch."""
        if not self.jsonl.is_file():
            return
        records = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        if not records:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in records]
        others = sorted({k for r in records for k in r if k.startswith("val/") and k != "val/loss"})
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for key in ("train/loss", "val/loss"):
            axes[0].plot(epochs, [r.get(key) for r in records], marker="o", label=key)
        for key in others:
            axes[1].plot(epochs, [r.get(key) for r in records], marker="o", label=key)
        for ax, title in zip(axes, ("loss", "validation metrics")):
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(self.run_dir / "curves.png", dpi=100)
        plt.close(fig)
