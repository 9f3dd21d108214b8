"""The pictures and text reports of an evaluation: confusion matrix, reliability diagram, modality importance,
the per-class report. Each function takes the plain values a task's `report()` (or `importance.py`) computed and
writes one file; matplotlib with the Agg backend, so it works without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crossmodal_cli.data.csvfile import printable

LABEL_CHARS = 24  # longer class names are shortened in the pictures (report.txt has them whole)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(label: str) -> str:
    return printable(label, LABEL_CHARS)


def write_report(report: Mapping[str, Any], folder: Path, title: str = "") -> list[Path]:
    """The files a task's report holds data for: report.txt and confusion_matrix.csv/.png (per-class scores and the
    confusion matrix), calibration.png (reliability bins). Returns the paths written."""
    written = []
    if "per_class" in report:
        written.append(folder / "report.txt")
        written[-1].write_text(per_class_text(report["classes"], report["per_class"]))
    if "confusion_matrix" in report:
        matrix = np.asarray(report["confusion_matrix"])
        header = ["true \\ predicted", *report["classes"]]
        import pandas as pd

        pd.DataFrame(matrix, columns=header[1:], index=pd.Index(report["classes"], name=header[0])).to_csv(
            folder / "confusion_matrix.csv")
        written.append(folder / "confusion_matrix.csv")
        written.append(confusion_png(matrix, report["classes"], folder / "confusion_matrix.png", title))
    if "reliability" in report:
        written.append(calibration_png(report["reliability"], report.get("ece"), folder / "calibration.png", title))
    return written


def per_class_text(classes: Sequence[str], per_class: Mapping[str, Sequence[float]]) -> str:
    """scikit-learn's classification_report layout: one row per class (precision, recall, F1, support), then the
    macro and support-weighted averages."""
    width = max(12, *(len(printable(c, 60)) for c in classes))
    support = np.asarray(per_class["support"], dtype=float)
    lines = [f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>9}", ""]
    for i, name in enumerate(classes):
        lines.append(f"{printable(name, 60):>{width}}  {per_class['precision'][i]:>9.4f}  "
                     f"{per_class['recall'][i]:>9.4f}  {per_class['f1'][i]:>9.4f}  {int(support[i]):>9d}")
    lines.append("")
    weights = support / max(support.sum(), 1)
    for label, avg in (("macro avg", lambda v: float(np.mean(v))),
                       ("weighted avg", lambda v: float(np.dot(v, weights)))):
        lines.append(f"{label:>{width}}  {avg(per_class['precision']):>9.4f}  {avg(per_class['recall']):>9.4f}  "
                     f"{avg(per_class['f1']):>9.4f}  {int(support.sum()):>9d}")
    return "\n".join(lines) + "\n"


def confusion_png(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Rows = true class, columns = predicted; colour = the row-normalised share (so rare classes are as visible
    as common ones), text = the count. The figure grows with the number of classes (about 0.28 inch per class):
    at 50 classes the labels and counts stay legible."""
    plt = _pyplot()
    n = len(classes)
    side = min(max(5.0, 0.28 * n + 2.5), 30.0)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's rows")
    labels = [_short(c) for c in classes]
    font = 10 if n <= 10 else 8 if n <= 25 else 6
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=font,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(f"confusion matrix{' - ' + title if title else ''} ({int(matrix.sum())} rows)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibration_png(reliability: Mapping[str, Any], ece: float | None, path: Path, title: str = "") -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin (bars; the diagonal is perfect
    calibration), with the number of rows per bin below."""
    plt = _pyplot()
    bins = reliability["bins"]
    centres = (np.arange(bins) + 0.5) / bins
    count = np.asarray(reliability["count"])
    filled = count > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[filled], np.asarray(reliability["accuracy"])[filled], width=1 / bins, edgecolor="black",
            alpha=0.8, label="accuracy")
    top.plot(np.asarray(reliability["confidence"])[filled], np.asarray(reliability["accuracy"])[filled], "o",
             color="darkorange", label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"reliability{' - ' + title if title else ''}" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    bottom.bar(centres, count, width=1 / bins, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("rows")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def importance_png(importance: Mapping[str, Any], path: Path) -> Path:
    """One horizontal bar per removed modality (or pair, or tabular column): how much each metric drops without
    it."""
    plt = _pyplot()
    removed = {**importance["removed"], **{f"column {c}": r for c, r in importance.get("columns", {}).items()}}
    names = list(removed)
    metrics = importance["metrics"]
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.45 * len(names) * len(metrics)))
    height = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        drops = [removed[name]["drop"][metric] for name in names]
        positions = np.arange(len(names)) + (k - (len(metrics) - 1) / 2) * height
        bars = ax.barh(positions, drops, height=height, label=f"{metric} (all present: "
                                                             f"{importance['all_present'][metric]:.3f})")
        ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_yticks(range(len(names)), [f"without {name}" for name in names])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("drop when removed (higher = the model relies on it more)")
    dropout = importance["modality_dropout"]
    note = (f"trained with modality_dropout={dropout:g}" if importance["trained_with_missing"] else
            "trained with modality_dropout=0: drops include the shock of an unseen input pattern")
    ax.set_title(f"modality importance on {importance['split']} ({importance['rows']} rows)\n{note}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.6 / (1 + len(names))), ncol=len(metrics), fontsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
