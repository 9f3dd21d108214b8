"""The ONNX model's outputs -> the task's prediction columns, as cmpredict writes them (tasks/*.predictions), in
numpy: classification `predicted` + `prob_CLASS`, multilabel the labels at or above the tuned threshold, regression
the value in the label's units, retrieval the top-5 lines and ranks within the rows given (+ unit embeddings), a
multitask checkpoint each column's own, prefixed `COLUMN/`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal_cli.errors import CrossmodalError


def columns(kind: str, state: dict, values: np.ndarray, lines: np.ndarray, separator: str = "|") -> dict:
    """One task's prediction columns for the rows whose outputs are `values` (and CSV lines `lines`). `state`: the
    task's state, with the probability column names cmpredict uses (tasks/base.probability_columns)."""
    if kind == "classification":
        classes = state["classes"]
        out = {"predicted": [classes[i] for i in values.argmax(1)]}
        out.update({name: values[:, i] for i, name in enumerate(state["probability_columns"])})
        return out
    if kind == "multilabel":
        classes, threshold = state["classes"], float(state.get("threshold", 0.5))
        chosen = values >= threshold
        out = {"predicted": [separator.join(c for c, on in zip(classes, row) if on) for row in chosen]}
        out.update({name: values[:, i] for i, name in enumerate(state["probability_columns"])})
        return out
    if kind == "regression":
        return {"predicted": values}
    if kind == "retrieval":
        return retrieval_columns(values, lines)
    raise CrossmodalError(f"bundle.json: task kind {kind!r} is not one this runtime decodes (classification, "
                          f"multilabel, regression, retrieval, multitask); export the checkpoint again with this "
                          f"version")


def retrieval_columns(values: np.ndarray, lines: np.ndarray, k: int = 5) -> dict:
    """values [B, 2, D] (image, text): each row's top-k matches in the other modality among the rows given, and
    the rank of its own match."""
    similarity = values[:, 0] @ values[:, 1].T
    out = {}
    for name, sim in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        top = np.argsort(-sim, axis=1, kind="stable")[:, :min(k, len(sim))]
        out[f"{name}_top{k}_lines"] = ["|".join(str(lines[j]) for j in row) for row in top]
        out[f"{name}_rank"] = (sim > np.diag(sim)[:, None]).sum(1) + 1
    return out


def unit(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(np.linalg.norm(values, axis=-1, keepdims=True), 1e-12)


def prediction_frame(task: dict, outputs: dict[str, np.ndarray], lines: np.ndarray) -> pd.DataFrame:
    """All prediction columns of the bundle's task (`task`: bundle.json's "task") for one pass's outputs."""
    if task["kind"] == "multitask":
        parts = {}
        for column, sub in task["tasks"].items():
            found = columns(sub["kind"], sub["state"], outputs[column], lines, sub.get("separator", "|"))
            parts.update({f"{column}/{name}": value for name, value in found.items()})
        return pd.DataFrame(parts)
    return pd.DataFrame(columns(task["kind"], task["state"], outputs["outputs"], lines, task.get("separator", "|")))
