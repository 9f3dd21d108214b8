"""What an exported bundle says about itself: bundle.json (everything the runtime's preparation needs, as data) and
the model card (card.json for programs, card.md for people): what it predicts, the inputs it expects, the training
config, the checkpoint's metrics on its validation and test splits, the training data's fingerprint, the versions."""
from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.factory import Rebuilt
from crossmodal_cli.pipeline.inputs import audio_rate, image_input
from crossmodal_cli.settings import to_values

KINDS = {"Classification": "classification", "MultiLabel": "multilabel", "Regression": "regression",
         "Retrieval": "retrieval", "MultiTask": "multitask"}


def tabular_inputs(rebuilt: Rebuilt) -> list[str]:
    """The tabular input arrays the graph takes: numeric and numeric_present where there are numeric columns,
    categorical where there are categorical ones (an array with no columns would be a zero-width input)."""
    if "tabular" not in rebuilt.modalities or rebuilt.tabular is None:
        return []
    return ([*(["numeric", "numeric_present"] if rebuilt.tabular.numeric_columns else []),
             *(["categorical"] if rebuilt.tabular.categorical_columns else [])])


def task_spec(task) -> dict:
    """The task as the runtime decodes it: its kind, state and prediction column names."""
    from crossmodal_cli.tasks.base import probability_columns

    kind = KINDS.get(type(task).__name__)
    if kind is None:
        raise CrossmodalError(f"a {type(task).__name__} checkpoint cannot be exported: the runtime decodes "
                              f"{', '.join(KINDS.values())}")
    if kind == "multitask":
        return {"kind": kind, "tasks": {column: task_spec(sub) for column, sub in task.tasks.items()}}
    state = dict(task.state())
    if kind in ("classification", "multilabel"):
        state["probability_columns"] = probability_columns(list(task.classes))
    return {"kind": kind, "state": state, "separator": getattr(task, "separator", "|")}


def bundle_spec(rebuilt: Rebuilt, onnx: dict) -> dict:
    cfg = rebuilt.config
    read = list(cfg.modalities or rebuilt.modalities)  # with data.tabular.as_text: tabular read, text encoded
    tabular = [str(c) for c in cfg.data.columns.tabular]
    columns = {m: (tabular if m == "tabular" else str(getattr(cfg.data.columns, m))) for m in rebuilt.modalities
               if m in read}
    spec: dict[str, Any] = {"format": 1, "modalities": list(rebuilt.modalities), "columns": columns,
                            "on_missing": cfg.data.on_missing, "task": task_spec(rebuilt.task), "onnx": onnx}
    if rebuilt.tabular is not None and "tabular" in rebuilt.modalities:
        spec["tabular"] = {"state": rebuilt.tabular.state(), "inputs": tabular_inputs(rebuilt)}
    if "image" in rebuilt.modalities:
        size, resize = image_input(cfg)
        encoder = cfg.encoder["image"]
        spec["image"] = {"size": size, "resize": resize, "mean": encoder.get("mean"), "std": encoder.get("std"),
                         "normalised_in": "the graph (uint8 pixels go in)"}
    if "text" in rebuilt.modalities:
        tokenizer = rebuilt.tokenizer
        spec["text"] = {"tokenizer": "tokenizer.json", "max_length": cfg.data.text.max_length,
                        "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token}
        if cfg.data.tabular.as_text and "tabular" in read:  # the columns written before the text (tabular_text.py)
            spec["text"]["tabular_columns"] = tabular
    if "audio" in rebuilt.modalities:
        spec["audio"] = {"sample_rate": audio_rate(cfg), "seconds": cfg.data.audio.seconds, "mono": True}
    return spec


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("crossmodal", "torch", "onnx", "onnxscript", "onnxruntime", "transformers", "tokenizers"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def input_lines(spec: dict) -> dict[str, str]:
    described = {"tabular": lambda s: "tabular: numbers and categories (blank = missing; a category the training "
                                       "split lacked counts as unknown)",
                 "image": lambda s: f"image: a path, encoded bytes or a PIL image; made RGB, upright, fitted to "
                                    f"{s['image']['size']}x{s['image']['size']} px ({s['image']['resize']})",
                 "text": lambda s: f"text: a string; tokenised with tokenizer.json, at most "
                                   f"{s['text']['max_length']} tokens",
                 "audio": lambda s: f"audio: a path or encoded bytes; mixed to mono, resampled to "
                                    f"{s['audio']['sample_rate']} Hz, the first {s['audio']['seconds']} s"}
    lines = {}
    for m in spec["modalities"]:
        columns = spec["columns"].get(m, [])
        for column in columns if isinstance(columns, list) else [columns]:
            lines[column] = described[m](spec)
    for column in spec.get("text", {}).get("tabular_columns", []):
        lines[column] = "a number or a category, written into the text as 'column: value' (data.tabular.as_text)"
    return lines


def card(rebuilt: Rebuilt, spec: dict, state: dict, metrics: dict, data: dict, checkpoint: Path) -> dict:
    task = spec["task"]
    return {"predicts": f"{task['kind']}: {rebuilt.task.describe()}",
            "labels": (task.get("state") or {}).get("classes"),
            "inputs": input_lines(spec), "missing_inputs": f"on_missing={spec['on_missing']} by default (error | "
                                                           f"drop | zero: masked as in training)",
            "checkpoint": {"path": str(checkpoint), "epoch": state["progress"]["epoch"] - 1,
                           "best_epoch": state["progress"].get("best_epoch")},
            "metrics": metrics, "data": data, "config": to_values(rebuilt.config), "versions": versions(),
            "export": spec["onnx"]}


def card_markdown(found: dict) -> str:
    lines = ["# Model card", "", f"**Predicts:** {found['predicts']}", ""]
    if found.get("labels"):
        lines += [f"**Labels:** {', '.join(map(str, found['labels']))}", ""]
    lines += ["## Inputs (one column each)", ""] + [f"- `{c}`: {d}" for c, d in found["inputs"].items()]
    lines += [f"- A blank or unreadable cell: {found['missing_inputs']}", "", "## Metrics of the checkpoint", ""]
    metrics = found["metrics"]
    if metrics.get("val") or metrics.get("test"):
        names = sorted({n for split in ("val", "test") for n in (metrics.get(split) or {})})
        lines += ["| metric | val | test |", "| --- | --- | --- |"]
        lines += [f"| {n} | {_number((metrics.get('val') or {}).get(n))} | {_number((metrics.get('test') or {}).get(n))} |"
                  for n in names]
        lines += ["", f"Source: {metrics.get('source', '')}", ""]
    else:
        lines += [metrics.get("source", "not available"), ""]
    export = found["export"]
    lines += ["## Export", "", f"- ONNX by torch's {export['exporter']} exporter; largest difference from the PyTorch "
                               f"model on a check batch: {export['max_abs_difference']:.1e}",
              f"- Checkpoint: {found['checkpoint']['path']} (epoch {found['checkpoint']['epoch']})",
              f"- Training data: {found['data']}",
              f"- Versions: {', '.join(f'{k} {v}' for k, v in found['versions'].items())}", "",
              "## Training config", "", "```yaml", yaml.safe_dump(found["config"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"
