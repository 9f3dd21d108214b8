"""Transfer learning: frozen encoders stay bit-identical, unfreezing trains them from epoch N, learning rates per
encoder and per layer, and the frozen-feature cache (computed once, reused, invalidated by a changed file)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.factory import build_model, build_optimizer
from crossmodal_cli.data.modalities import train_wordpiece
from crossmodal_cli.engine.evaluation import total_loss
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.paths import config_dir
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.train import check_config, train
from tests.conftest import settings_of, write_dataset

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "trainer.batch_size=8", "data.image_size=32",
        "data.text.max_length=16", "data.audio.sample_rate=8000", "data.audio.seconds=0.5"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("transfer"), n=40, with_split=True)


def encoder_state(state: dict, modality: str) -> dict:
    prefix = f"encoders.{modality}."
    return {k: v for k, v in state["model"].items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_frozen_encoder_is_bit_identical_and_unfreezes_at_its_epoch(csv, tmp_path):
    """Image frozen for the whole run (BatchNorm statistics included), audio frozen until epoch 3, text trained."""
    cfg = compose_train("data=csv", f"data.csv={csv}", "trainer.max_epochs=3", "trainer.keep_last_k=3",
                        "encoder.image.freeze=true", "encoder.audio.freeze=true", "encoder.audio.unfreeze_at_epoch=3",
                        *FAST)
    train(cfg, tmp_path / "run")
    epochs = [torch.load(tmp_path / f"run/checkpoints/epoch-00{n}.ckpt", weights_only=True) for n in (1, 2, 3)]
    assert same(encoder_state(epochs[0], "image"), encoder_state(epochs[2], "image"))
    assert any("running_mean" in k for k in encoder_state(epochs[0], "image"))
    assert same(encoder_state(epochs[0], "audio"), encoder_state(epochs[1], "audio"))      # still frozen in epoch 2
    assert not same(encoder_state(epochs[1], "audio"), encoder_state(epochs[2], "audio"))  # trained in epoch 3
    assert not same(encoder_state(epochs[0], "text"), encoder_state(epochs[1], "text"))


def test_frozen_from_the_first_step(csv):
    """No optimizer step changes a frozen encoder, even with weight decay (its parameters have no gradient)."""
    cfg = compose_train("encoder.image.freeze=true", "optimizer.weight_decay=0.5")
    tokenizer = train_wordpiece(["a red thing"], vocab_size=40, lowercase=True)
    task = Classification.with_classes(2)
    model = build_model(settings_of(cfg), ["image", "text"], task, tokenizer)
    before = {k: v.clone() for k, v in model.encoders["image"].state_dict().items()}
    optimizer = build_optimizer(settings_of(cfg), model)
    model.train()
    assert not model.encoders["image"].training and model.encoders["text"].training
    batch = {"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8),
             "text": tokenizer(["a red thing"] * 4, return_tensors="pt", return_token_type_ids=False)}
    for _ in range(3):
        loss = total_loss(task, model(batch), torch.tensor([0, 1, 0, 1]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.encoders["image"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_learning_rate_per_encoder_and_per_layer():
    cfg = compose_train("encoder/text=bert_small", "encoder.text.lr_scale=0.1", "encoder.text.layer_decay=0.5",
                        "encoder.image.lr_scale=2", "optimizer.lr=0.01")
    tokenizer = train_wordpiece(["a red thing"], vocab_size=40, lowercase=True)
    model = build_model(settings_of(cfg), ["image", "text"], Classification.with_classes(2), tokenizer)
    optimizer = build_optimizer(settings_of(cfg), model)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    layers = len(model.encoders["text"].layer_groups())
    assert layers >= 5  # embeddings, 4 blocks (and the rest)
    for depth in range(layers):
        name = f"encoder/text/{layers - 1 - depth}"
        assert lrs.get(name, lrs.get(f"{name}/no_decay")) == pytest.approx(0.01 * 0.1 * 0.5 ** depth)
    assert all(lr == pytest.approx(0.02) for name, lr in lrs.items() if name.startswith("encoder/image/"))
    assert lrs["fusion+head"] == pytest.approx(0.01)


def test_the_feature_cache_needs_frozen_encoders():
    with pytest.raises(CrossmodalError, match=r"^trainer.feature_cache=true: encoder.text must stay frozen"):
        check_config(compose_train("trainer.feature_cache=true", "modalities=[image,text]",
                                   "encoder.image.freeze=true"))


def test_the_feature_cache_is_computed_once_reused_and_invalidated(csv, tmp_path, caplog):
    cache = tmp_path / "cache"
    frozen = ["encoder.image.freeze=true", "encoder.text.freeze=true", "encoder.audio.freeze=true",
              "trainer.feature_cache=true", f"trainer.cache_dir={cache}", "trainer.max_epochs=2", "data=csv",
              f"data.csv={csv}", *FAST]
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.features"):
        first = train(compose_train(*frozen), tmp_path / "a")
    entries = sorted(p.relative_to(cache) for p in cache.glob("*/*") if p.is_dir())
    assert [e.parts[0] for e in entries] == ["audio", "image", "text"]
    assert caplog.text.count("feature cache: stored") == 3
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.features"):
        second = train(compose_train(*frozen, "fusion=gated"), tmp_path / "b")  # another fusion, same features
    assert caplog.text.count("feature cache: reusing") == 3 and "stored" not in caplog.text
    assert 0 <= second["val"]["accuracy"] <= 1 and first["val"]["loss"] > 0
    image = csv.parent / "img" / "3.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # the file changed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.features"):
        train(compose_train(*frozen), tmp_path / "c")
    assert "stored 40 image inputs" in caplog.text and caplog.text.count("reusing") == 2
    assert len([p for p in (cache / "image").iterdir() if p.is_dir()]) == 2
    report = json.loads((tmp_path / "c/metrics.json").read_text())
    assert report["parameters"]["total"] > report["parameters"]["fusion"]
