"""Adapters through a real training run: a tiny pretrained Hugging Face text model with LoRA and a CNN with LoHa,
both with gradient checkpointing. The base weights stay the folder's, the counts reach metrics.json, a checkpoint
rebuilds without the pretrained folder, resume is exact, the export merges the adapters, and the feature cache and
freeze refuse adapters in one line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.config.resume import resumed_config
from crossmodal_cli.encoders.adapters import has_adapters
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.exporting import Graph, sample
from crossmodal_cli.factory import rebuild
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import check_config, train
from tests.conftest import write_dataset

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "trainer.batch_size=8", "data.image_size=32",
        "data.text.max_length=16"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def tiny_bert(folder: Path) -> None:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel

    from crossmodal_cli.data.modalities import load_pretrained_tokenizer, train_wordpiece

    train_wordpiece(["caption number one two three"], vocab_size=60, lowercase=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(load_pretrained_tokenizer(str(folder))), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)


def outputs(rebuilt) -> torch.Tensor:
    graph = Graph(rebuilt).eval()
    with torch.no_grad():
        return graph(*sample(rebuilt, 4))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("adapters")
    csv = write_dataset(root / "data", n=40, with_split=True)
    tiny_bert(root / "bert")
    overrides = ["data=csv", f"data.csv={csv}", "modalities=[image,text]", "encoder/text=hf",
                 f"encoder.text.pretrained={root / 'bert'}", "encoder.text.lora.r=4", "encoder.image.lora.r=2",
                 "encoder.image.lora.method=loha", "encoder.text.gradient_checkpointing=true",
                 "encoder.image.gradient_checkpointing=true", "trainer.max_epochs=2", "trainer.keep_last_k=2",
                 "optimizer.lr=0.01", *FAST]
    metrics = train(compose_train(*overrides), root / "run")
    from transformers import AutoModel

    original = AutoModel.from_pretrained(str(root / "bert")).state_dict()
    best = load_checkpoint(root / "run/checkpoints/best.ckpt")
    expected = outputs(rebuild(best))
    return {"root": root, "metrics": metrics, "original": original, "best": best, "expected": expected}


def test_only_the_adapters_changed_in_the_encoders(run):
    state = run["best"]["model"]
    base = {k.replace("encoders.text.model.", "").replace(".base_layer", ""): v for k, v in state.items()
            if k.startswith("encoders.text.model.") and "lora_" not in k}
    assert base.keys() == run["original"].keys() - {k for k in run["original"] if k.startswith("pooler.")}
    assert all(torch.equal(base[k], run["original"][k]) for k in base)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())  # the adapters trained
    assert any("hada_w1_a" in k for k in state)


def test_trainable_and_total_parameters_per_encoder_in_metrics_json(run):
    counts = json.loads((run["root"] / "run/metrics.json").read_text())["parameters"]
    assert counts["total"] > counts["trainable"] > counts["fusion"] > 0
    for modality in ("image", "text"):
        encoder = counts["encoders"][modality]
        assert 0 < encoder["trainable"] < 0.5 * encoder["total"] and encoder["total"] == counts[f"encoder/{modality}"]
    assert counts["trainable"] == (counts["encoders"]["image"]["trainable"] + counts["encoders"]["text"]["trainable"]
                                   + counts["fusion"] + counts["head"])


def test_a_checkpoint_rebuilds_without_the_pretrained_folder(run):
    folder = run["root"] / "bert"
    folder.rename(run["root"] / "moved")
    try:
        rebuilt = rebuild(load_checkpoint(run["root"] / "run/checkpoints/best.ckpt"))
    finally:
        (run["root"] / "moved").rename(folder)
    assert has_adapters(rebuilt.model.encoders["text"]) and has_adapters(rebuilt.model.encoders["image"])
    torch.testing.assert_close(outputs(rebuilt), run["expected"], atol=0, rtol=0)


def test_resume_from_an_epoch_checkpoint_is_exact(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run["root"] / "run", copy)
    cfg, state = resumed_config(str(copy / "checkpoints/epoch-001.ckpt"), [])
    train(cfg, copy, resume=state)
    a = load_checkpoint(run["root"] / "run/checkpoints/last.ckpt")["model"]
    b = load_checkpoint(copy / "checkpoints/last.ckpt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_export_merges_the_adapters_and_keeps_parity(run, tmp_path):
    import onnx
    import onnxruntime as ort

    from crossmodal_cli.exporting import export_bundle, input_names

    card = export_bundle(run["root"] / "run/checkpoints/best.ckpt", tmp_path / "bundle")
    graph = onnx.load(str(tmp_path / "bundle/model.onnx"))
    names = [i.name for i in graph.graph.initializer] + [n.name for n in graph.graph.node]
    assert not any(re.search(r"lora|hada", name) for name in names)
    rebuilt = rebuild(run["best"])  # unmerged
    arrays = sample(rebuilt, 4)
    session = ort.InferenceSession(str(tmp_path / "bundle/model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(input_names(rebuilt.modalities), arrays)})[0]
    assert np.abs(got - run["expected"].numpy()).max() <= 1e-4
    assert card is not None


def test_the_feature_cache_refuses_adapters_in_one_line():
    with pytest.raises(CrossmodalError, match=r"^trainer.feature_cache=true: encoder.text.lora.r=8 adds adapters "
                                              r"that train, so its features cannot be cached; set "
                                              r"encoder.text.lora.r=0 \(and freeze=true\) or trainer.feature_cache=false$"):
        check_config(compose_train("trainer.feature_cache=true", "modalities=[image,text]", "encoder.text.lora.r=8",
                                   "encoder.image.freeze=true"))


@pytest.mark.parametrize("override,message", [
    (["encoder.text.lora.r=8", "encoder.text.freeze=true"],
     r"^encoder.text.lora.r=8 with encoder.text.freeze=true: choose one \(adapters train while the encoder's "
     r"weights stay fixed; freeze trains nothing in it\)$"),
    (["encoder.text.lora.r=-1"], r"^encoder.text.lora.r=-1: must be a whole number >= 0"),
    (["encoder.image.lora.method=adalora"], r"^encoder.image.lora.method=adalora: must be one of lora, loha, lokr$"),
    (["encoder.image.lora.r=4", "encoder.image.lora.target_modules=[foo]"],
     r"^encoder.image.lora.target_modules=\[foo\]: matches no module of TinyCNN; modules found: body.0, "),
    (["+encoder.text.lora.rank=4"],
     r"^encoder.text.lora.rank: unknown key in encoder.text.lora; known keys: alpha, dropout, method, r, target_modules$"),
])
def test_adapter_settings_are_checked_at_start_up_in_one_line(override, message):
    with pytest.raises(CrossmodalError, match=message):
        check_config(compose_train("modalities=[image,text]", *override))

