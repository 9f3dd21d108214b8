"""Config values a user can get wrong give one-line errors; the configs find themselves from anywhere."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.engine.runtime import resolve_device, resolve_precision
from crossmodal_cli.factory import build_model, build_optimizer
from crossmodal_cli.data.modalities import train_wordpiece
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.paths import config_dir
from crossmodal_cli.tasks.classification import Classification
from tests.conftest import settings_of


def test_device_and_precision():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu and resolve_precision("auto", cpu) == "fp32"
    if not torch.cuda.is_available():
        with pytest.raises(CrossmodalError, match="trainer.device=cuda: no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(CrossmodalError, match="trainer.device=tpu: use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(CrossmodalError, match="trainer.precision=fp8"):
        resolve_precision("fp8", cpu)


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return settings_of(compose("train", overrides=list(overrides)))


def test_default_config_builds_a_three_modality_model_with_no_decay_on_biases():
    cfg = compose_train()
    tok = train_wordpiece(["a red thing"], vocab_size=40, lowercase=True)
    model = build_model(cfg, ["image", "text", "audio"], Classification.with_classes(3), tok)
    assert sorted(model.encoders) == ["audio", "image", "text"] and model.head.out_features == 3
    optimizer = build_optimizer(cfg, model)
    groups = optimizer.param_groups
    for group in groups:
        flat = all(p.ndim <= 1 for p in group["params"])
        assert group["weight_decay"] == (0.0 if flat else 0.01), group["name"]
        assert group["name"].endswith("/no_decay") == flat
        assert group["lr"] == pytest.approx(1e-3)  # lr_scale 1, layer_decay 1 by default
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_bad_fusion_option_names_the_group():
    cfg = compose_train("fusion.proj_dim=-3")
    with pytest.raises(CrossmodalError, match=r"^fusion: cannot build crossmodal_cli.fusion.concat.ConcatFusion"):
        build_model(cfg, ["image"], Classification.with_classes(2), None)
