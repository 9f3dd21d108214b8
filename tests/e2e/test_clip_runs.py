"""CLIP/SigLIP through the real `cmtrain`: retrieval started from the checkpoint's joint space (zero epochs give the
model's own recalls; SigLIP trains with its sigmoid loss), zero-shot classification, trainer.max_epochs=0 for a
classification, and checkpoints that need no folder afterwards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from console import console
from clip_folders import tiny_folder
from conftest import write_dataset

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "data=csv", "data.text.max_length=16"]


def run(command: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console(command), *args], cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def clip_args(folder: Path) -> list[str]:
    return ["encoder/image=clip", "encoder/text=clip", f"encoder.image.pretrained={folder}",
            f"encoder.text.pretrained={folder}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """24 rows (split column: 7 val, 5 test), captions with words the tiny tokenizer knows."""
    csv = write_dataset(tmp_path_factory.mktemp("data"), n=24, with_split=True)
    frame = pd.read_csv(csv)
    words = ["red circle", "green square", "blue triangle", "a dog", "a cat", "the picture"]
    frame["text"] = [f"{words[i % 6]} number {i % 10} and {words[(i * 7) % 6]}" for i in range(len(frame))]
    frame.to_csv(csv, index=False)
    return csv


@torch.no_grad()
def own_recalls(model, folder: Path, csv: Path, split: str) -> dict[str, float]:
    """Recall@1 both ways from CLIPModel.get_image_features / get_text_features on the pipeline's pixels."""
    from crossmodal_cli.data.modalities import load_image, load_pretrained_tokenizer
    from crossmodal_cli.encoders.clip import folder_input_spec

    frame = pd.read_csv(csv)
    frame = frame[frame["split"] == split]
    size, resize = folder_input_spec(str(folder), "k")
    pixels = torch.stack([load_image(str(csv.parent / p), size, resize) for p in frame["image_path"]]).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    images = model.get_image_features(pixel_values=(pixels - mean) / std)
    tokens = load_pretrained_tokenizer(str(folder))(frame["text"].tolist(), padding=True, return_tensors="pt")
    texts = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    images, texts = (getattr(x, "pooler_output", x) for x in (images, texts))
    sim = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).T
    return {f"{name}_r1": float(((s > s.diagonal().unsqueeze(1)).sum(1) == 0).float().mean())
            for name, s in (("i2t", sim), ("t2i", sim.T))}


def test_retrieval_with_zero_epochs_gives_clips_own_recalls_and_needs_no_folder_after(data, tmp_path):
    folder = tmp_path / "clip"
    model = tiny_folder(folder, "clip", seed=3)
    run("cmtrain", "task=retrieval", f"data.csv={data}", "trainer.max_epochs=0", "hydra.run.dir=run", *FAST,
        *clip_args(folder), cwd=tmp_path)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["best_epoch"] == 0
    for split in ("val", "test"):
        for key, value in own_recalls(model, folder, data, split).items():
            assert metrics[split][key] == pytest.approx(value), (split, key)
    assert json.loads((tmp_path / "run/labels.json").read_text()) == {"loss": "infonce", "embed_dim": 24}
    shutil.rmtree(folder)
    run("cmeval", f"ckpt={tmp_path / 'run/checkpoints/best.ckpt'}", "hydra.run.dir=ev", "trainer.num_workers=0",
        cwd=tmp_path)
    evaluated = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert evaluated["test"]["recall_mean"] == pytest.approx(metrics["test"]["recall_mean"])


def test_siglip_retrieval_trains_with_its_sigmoid_loss(data, tmp_path):
    folder = tmp_path / "siglip"
    tiny_folder(folder, "siglip")
    run("cmtrain", "task=retrieval", f"data.csv={data}", "trainer.max_epochs=1", "trainer.batch_size=4",
        "hydra.run.dir=run", *FAST, *clip_args(folder), cwd=tmp_path)
    assert json.loads((tmp_path / "run/labels.json").read_text()) == {"loss": "sigmoid", "embed_dim": 32}
    state = torch.load(tmp_path / "run/checkpoints/best.ckpt", weights_only=True)["model"]
    assert "head.logit_bias" in state
    assert np.isfinite(json.loads((tmp_path / "run/metrics.json").read_text())["test"]["recall_mean"])
    # the exported bundle predicts what the checkpoint does: the same ranking, embeddings of width embed_dim
    run("cmexport", f"ckpt={tmp_path / 'run'}", f"out={tmp_path / 'bundle'}", cwd=tmp_path)
    from crossmodal_cli.runtime import load_bundle

    rows = pd.read_csv(data)
    rows = rows[rows["split"] == "test"].head(4)
    embedded = load_bundle(tmp_path / "bundle").embed(rows, root=str(data.parent))
    assert np.asarray(embedded["image"]).shape == np.asarray(embedded["text"]).shape == (4, 32)


def test_zero_shot_classifies_images_by_their_prompts_and_cmsweep_lists_it(data, tmp_path):
    folder = tmp_path / "clip"
    tiny_folder(folder, "clip", seed=1)
    run("cmtrain", "task=zero_shot", f"data.csv={data}", "trainer.max_epochs=0", "hydra.run.dir=sweep/0", *FAST,
        *clip_args(folder), cwd=tmp_path)
    metrics = json.loads((tmp_path / "sweep/0/metrics.json").read_text())
    for split in ("val", "test"):
        assert {"accuracy", "f1_macro", "loss"} <= set(metrics[split])
    state = torch.load(tmp_path / "sweep/0/checkpoints/best.ckpt", weights_only=True)
    assert state["task"]["classes"] == ["cat", "dog"] and state["task"]["embed_dim"] == 24
    assert state["modalities"] == ["image"]
    sweep = run("cmsweep", str(tmp_path / "sweep"), cwd=tmp_path)
    assert "| zero_shot |" in sweep.stdout and f"| {metrics['val']['accuracy']:.3f} |" in sweep.stdout, sweep.stdout
    shutil.rmtree(folder)
    run("cmeval", f"ckpt={tmp_path / 'sweep/0/checkpoints/best.ckpt'}", "hydra.run.dir=ev", "trainer.num_workers=0",
        cwd=tmp_path)
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["test"]["accuracy"] == \
        pytest.approx(metrics["test"]["accuracy"])


def test_zero_shot_mistakes_are_one_line(data, tmp_path):
    proc = run("cmtrain", "task=zero_shot", f"data.csv={data}", "trainer.max_epochs=0", *FAST, cwd=tmp_path,
               check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "task=zero_shot compares with the text tower of a CLIP/SigLIP model" in proc.stderr
    tiny_folder(tmp_path / "clip", "clip")
    proc = run("cmtrain", "task=zero_shot", f"data.csv={data}", *FAST, *clip_args(tmp_path / "clip"), cwd=tmp_path,
               check=False)
    assert proc.returncode == 2 and "task=zero_shot trains nothing; set trainer.max_epochs=0" in proc.stderr


def test_classification_with_zero_epochs_evaluates_the_initial_model(data, tmp_path):
    run("cmtrain", f"data.csv={data}", "trainer.max_epochs=0", "modalities=[image,text]", "hydra.run.dir=run",
        *FAST, cwd=tmp_path)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["best_epoch"] == 0 and {"accuracy", "f1_macro"} <= set(metrics["test"])
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0]
    run("cmeval", f"ckpt={tmp_path / 'run/checkpoints/best.ckpt'}", "hydra.run.dir=ev", "trainer.num_workers=0",
        cwd=tmp_path)
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["test"]["accuracy"] == \
        pytest.approx(metrics["test"]["accuracy"])
