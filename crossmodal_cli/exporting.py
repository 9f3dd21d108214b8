"""A checkpoint as a self-contained bundle (`cmexport`): model.onnx, bundle.json, tokenizer.json, card.json/.md.

The ONNX graph takes what the torch-free runtime can prepare (crossmodal_cli/runtime/): images uint8 [B, 3, H, W]
already fitted to the encoder's size (normalised inside the graph), input_ids/attention_mask int64 [B, L], waveforms
float32 [B, N] at the encoder's rate, and has_MODALITY bool [B] (False: missing, masked as in training); it returns
the task's outputs (probabilities, values in the label's units, retrieval's [B, 2, D] embeddings; a multitask
checkpoint one output per label column), with a dynamic batch axis. Texts are padded to data.text.max_length (the
padding is masked, so the outputs equal those of the training pipeline's padding to the batch's longest text): a
static token axis exports every encoder and fusion, also those that cut or specialise on the token count. torch's dynamo exporter is
tried first, the TorchScript exporter second; a part neither can export is named in one line. Adapters (LoRA, LoHa,
LoKr) are merged into their base weights first, so the graph holds plain layers and no adapter operations. Before
the bundle is written the graph is run with onnxruntime on a synthetic batch and compared with the PyTorch model.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from crossmodal_cli.card import tabular_inputs
from crossmodal_cli.encoders.adapters import merge_adapters
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.factory import Rebuilt
from crossmodal_cli.pipeline.inputs import audio_rate, image_input
from crossmodal_cli.tasks.multitask import MultiTask

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # the largest difference between the ONNX and PyTorch outputs a bundle may have


class Graph(nn.Module):
    """The model and the task's output step as one function of plain arrays (see the module docstring)."""

    def __init__(self, rebuilt: Rebuilt):
        super().__init__()
        self.model, self.task, self.modalities = rebuilt.model, rebuilt.task, list(rebuilt.modalities)
        self.tabular = tabular_inputs(rebuilt)
        self.heads = list(self.task.tasks) if isinstance(self.task, MultiTask) else None  # one output per column

    def forward(self, *arrays: torch.Tensor):
        named = dict(zip(input_names(self.modalities, self.tabular), arrays))
        inputs = {m: named[m] for m in self.modalities if m not in ("text", "tabular")}
        if "text" in self.modalities:
            inputs["text"] = {"input_ids": named["input_ids"], "attention_mask": named["attention_mask"]}
        if "tabular" in self.modalities:
            inputs["tabular"] = {kind: named[f"tabular_{kind}"] for kind in self.tabular}
        present = {m: named[f"has_{m}"] for m in self.modalities}
        model = self.model
        out = model.head_outputs(model.fuse(model.encode(inputs), present))
        values = self.task.outputs(out)
        return tuple(values[h] for h in self.heads) if self.heads else values


def input_names(modalities: list[str], tabular: Sequence[str] = ()) -> list[str]:
    """The graph's inputs in order: per modality its arrays (text: input_ids, attention_mask; tabular:
    tabular_KIND for each of `tabular`, see `tabular_inputs`), then has_MODALITY for each."""
    names = []
    for modality in modalities:
        names += (["input_ids", "attention_mask"] if modality == "text" else
                  [f"tabular_{kind}" for kind in tabular] if modality == "tabular" else [modality])
    return names + [f"has_{m}" for m in modalities]


def sample(rebuilt: Rebuilt, rows: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A synthetic batch for tracing and the parity check: random pixels, tokens, sound; one row per modality
    missing where there are enough rows."""
    rng = np.random.default_rng(seed)
    cfg, arrays = rebuilt.config, {}
    if "image" in rebuilt.modalities:
        size = image_input(cfg)[0]
        arrays["image"] = torch.from_numpy(rng.integers(0, 256, (rows, 3, size, size), dtype=np.uint8))
    if "audio" in rebuilt.modalities:
        length = int(round(audio_rate(cfg) * cfg.data.audio.seconds))
        arrays["audio"] = torch.from_numpy(rng.normal(0, 0.1, (rows, length)).astype(np.float32))
    if rebuilt.tabular is not None and "tabular" in rebuilt.modalities:
        numeric = len(rebuilt.tabular.numeric_columns)
        arrays["tabular_numeric"] = torch.from_numpy(rng.normal(0, 1, (rows, numeric)).astype(np.float32))
        arrays["tabular_numeric_present"] = torch.from_numpy(rng.random((rows, numeric)) > 0.2)
        arrays["tabular_categorical"] = torch.from_numpy(np.stack(
            [rng.integers(0, c, rows) for c in rebuilt.tabular.cardinalities], axis=1).astype(np.int64)
            if rebuilt.tabular.cardinalities else np.zeros((rows, 0), np.int64))
    if "text" in rebuilt.modalities:
        vocab, length = len(rebuilt.tokenizer), cfg.data.text.max_length
        arrays["input_ids"] = torch.from_numpy(rng.integers(5, vocab, (rows, length)))
        arrays["attention_mask"] = torch.ones(rows, length, dtype=torch.int64)
        arrays["attention_mask"][0, length // 2:] = 0
    for i, modality in enumerate(rebuilt.modalities):
        has = torch.ones(rows, dtype=torch.bool)
        if rows > len(rebuilt.modalities):
            has[i + 1] = False
        arrays[f"has_{modality}"] = has
    return tuple(arrays[n] for n in input_names(list(rebuilt.modalities), tabular_inputs(rebuilt)))


def output_names(graph: Graph) -> list[str]:
    return list(graph.heads) if graph.heads else ["outputs"]


def write_onnx(graph: Graph, args: tuple[torch.Tensor, ...], path: Path) -> str:
    """Export the graph, traced with `args`, to `path`; returns the exporter that succeeded (dynamo, else
    torchscript)."""
    names, outs = input_names(graph.modalities, graph.tabular), output_names(graph)
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in names)
    errors = []
    try:
        torch.onnx.export(graph, args, str(path), dynamo=True, input_names=names, output_names=outs,
                          dynamic_shapes={"arrays": shapes}, verbose=False)
        return "dynamo"
    except Exception as err:  # the dynamo exporter refuses some graphs; the TorchScript exporter may take them
        errors.append(f"dynamo: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
    axes = {n: {0: "batch"} for n in names}
    axes.update({o: {0: "batch"} for o in outs})
    try:
        torch.onnx.export(graph, args, str(path), dynamo=False, input_names=names, output_names=outs,
                          dynamic_axes=axes, opset_version=17)
        return "torchscript"
    except Exception as err:
        errors.append(f"torchscript: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
    raise CrossmodalError(f"cannot export {describe_parts(graph)} to ONNX ({'; '.join(errors)[:400]})")


def describe_parts(graph: Graph) -> str:
    model = graph.model
    encoders = ", ".join(f"{m}: {type(e).__name__}" for m, e in model.encoders.items())
    fusion = type(model.fusion).__name__ if model.fusion is not None else "no fusion"
    return f"this model (encoders {encoders}; {fusion}; task {type(graph.task).__name__})"


def parity(graph: Graph, rebuilt: Rebuilt, path: Path, rows: int = 5) -> float:
    """The largest absolute difference between onnxruntime's and PyTorch's outputs on a synthetic batch of `rows`
    (another batch size than the traced one, so the dynamic axis is exercised)."""
    import onnxruntime as ort

    arrays = sample(rebuilt, rows, seed=1)
    with torch.no_grad():
        expected = graph(*arrays)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reads = {i.name for i in session.get_inputs()}  # the exporter drops an input the graph never reads (a presence
    feed = {n: a.numpy() for n, a in zip(input_names(graph.modalities, graph.tabular), arrays) if n in reads}  # flag retrieval ignores)
    got = session.run(None, feed)
    return max(float(np.abs(g - e.float().numpy()).max()) for g, e in zip(got, expected))


@contextlib.contextmanager
def quiet():
    """The exporter's progress prints and its optimizer's notes (e.g. constants it could not fold) out of the
    user's terminal; errors still raise."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(rebuilt: Rebuilt, folder: Path) -> dict:
    """model.onnx into `folder`, checked; returns {"exporter", "max_abs_difference", "inputs", "outputs"}. The
    model's adapters are merged into its weights here (in place: the model computes the same, as plain layers)."""
    rebuilt.model.eval()
    merged = merge_adapters(rebuilt.model)
    if merged:
        log.info("adapters merged into the weights of %d layers", merged)
    graph = Graph(rebuilt).eval()
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings(), quiet():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracing notes, not the user's business
        target = Path(scratch) / "model.onnx"
        exporter = write_onnx(graph, sample(rebuilt, 3), target)
        difference = parity(graph, rebuilt, target)
        if not difference <= TOLERANCE:
            raise CrossmodalError(f"the exported graph's outputs differ from the PyTorch model's by {difference:.2e} "
                                  f"(more than {TOLERANCE}); {describe_parts(graph)} does not export faithfully")
        for part in Path(scratch).iterdir():  # model.onnx, and its weights file (model.onnx.data) where written
            shutil.copyfile(part, folder / part.name)
    log.info("model.onnx: %s exporter, largest difference from PyTorch %.1e", exporter, difference)
    return {"exporter": exporter, "max_abs_difference": difference,
            "inputs": input_names(graph.modalities, graph.tabular),
            "outputs": output_names(graph)}


def file_digest(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def checkpoint_metrics(checkpoint: Path, rebuilt: Rebuilt) -> dict:
    """The checkpoint's val and test metrics: its run's metrics.json for the run's best.ckpt (cmtrain's final
    evaluation), else evaluated now on the stored splits (cmeval's code), else why not."""
    run = checkpoint.resolve().parent.parent
    if checkpoint.name == "best.ckpt" and (run / "metrics.json").is_file():
        stored = json.loads((run / "metrics.json").read_text())
        return {"val": stored.get("val"), "test": stored.get("test"), "source": f"{run / 'metrics.json'}"}
    from crossmodal_cli.inference import Predictor, evaluate_split

    try:
        predictor = Predictor.place(rebuilt, device="cpu", precision="fp32")
        table = predictor.read(rebuilt.config.data, keep=["val", "test"])
        found = {s: evaluate_split(predictor, table, s)[0] for s in ("val", "test") if len(table.splits[s])}
    except CrossmodalError as err:
        return {"source": f"not measured: the checkpoint's data could not be read ({err})"}
    return {**found, "source": "evaluated at export on the checkpoint's stored val and test splits"}


def data_fingerprint(checkpoint: Path, rebuilt: Rebuilt) -> dict:
    """The training CSV(s) with their SHA-256 (the files they name are not hashed) and the rows of each split."""
    data = rebuilt.config.data
    found = {role: {"path": path, "sha256": file_digest(path)}
             for role, path in (("csv", data.csv), ("train_csv", data.train_csv), ("val_csv", data.val_csv),
                                ("test_csv", data.test_csv)) if path}
    report = checkpoint.resolve().parent.parent / "data_report.json"
    if report.is_file():
        found["rows"] = json.loads(report.read_text()).get("rows")
    return found


def export_bundle(checkpoint: Path, out: Path) -> dict:
    """Write the bundle of `checkpoint` into `out` (made; an existing bundle there is replaced, any other content
    refused); returns card.json's content."""
    from crossmodal_cli.card import bundle_spec, card, card_markdown
    from crossmodal_cli.engine.checkpoint import load_checkpoint
    from crossmodal_cli.factory import rebuild

    if out.exists() and any(out.iterdir()) and not (out / "bundle.json").is_file():
        raise CrossmodalError(f"out={out}: the folder exists and is not a bundle; choose an empty or new folder")
    state = load_checkpoint(checkpoint)
    rebuilt = rebuild(state)
    out.mkdir(parents=True, exist_ok=True)
    onnx = export_onnx(rebuilt, out)
    spec = bundle_spec(rebuilt, onnx)
    if rebuilt.tokenizer is not None:
        (out / "tokenizer.json").write_text(rebuilt.tokenizer.backend_tokenizer.to_str())
    found = card(rebuilt, spec, state, checkpoint_metrics(checkpoint, rebuilt), data_fingerprint(checkpoint, rebuilt),
                 checkpoint)
    write_json(out / "bundle.json", spec)
    write_json(out / "card.json", found)
    (out / "card.md").write_text(card_markdown(found))
    return found
