"""Every fusion inside the whole model (real tiny encoders, a real batch from the data pipeline), for every subset
of modalities: logits of the right shape, and the loss's gradient reaches every parameter of every encoder."""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.factory import build_model
from crossmodal_cli.pipeline.data import load_data
from crossmodal_cli.pipeline.inputs import build_tokenizer
from crossmodal_cli.pipeline.loaders import make_split_loader
from crossmodal_cli.paths import config_dir
from crossmodal_cli.tasks.classification import Classification
from tests.conftest import settings_of, write_dataset

STRATEGIES = sorted(p.stem for p in Path(config_dir(), "fusion").glob("*.yaml"))
SUBSETS = [list(s) for r in (1, 2, 3) for s in itertools.combinations(("image", "text", "audio"), r)]
BATCH = 6


@pytest.fixture(scope="module")
def batch_and_cfg(tmp_path_factory):
    """One training batch with all three modalities, and the config that read it."""
    csv = write_dataset(tmp_path_factory.mktemp("full"), n=16)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", "data.image_size=32",
                                          "data.audio.sample_rate=8000", "data.audio.seconds=0.25"])
    cfg = settings_of(cfg)
    table = load_data(cfg.data, ["image", "text", "audio"], cfg.seed)
    tokenizer = build_tokenizer(cfg, table.splits["train"]["text"].tolist())
    loader = make_split_loader(table, "train", cfg, tokenizer, batch_size=BATCH, train=True, num_workers=0,
                               seed=0, pin_memory=False)
    return next(iter(loader)), cfg, tokenizer


@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
@pytest.mark.parametrize("fusion", STRATEGIES)
def test_gradients_reach_every_encoder(fusion, modalities, batch_and_cfg):
    batch, base, tokenizer = batch_and_cfg
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"fusion={fusion}"])
    cfg = dataclasses.replace(settings_of(cfg), data=base.data)
    torch.manual_seed(0)
    model = build_model(cfg, modalities, Classification.with_classes(2),
                        tokenizer=tokenizer if "text" in modalities else None)
    model.train()
    out = model({m: batch["inputs"][m] for m in modalities})
    assert out.logits.shape == (BATCH, 2) and torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, batch["target"]).backward()
    for modality in modalities:
        params = dict(model.encoders[modality].named_parameters())
        assert params and all(p.requires_grad for p in params.values())
        missing = [name for name, p in params.items() if p.grad is None]
        assert not missing, f"{fusion}: no gradient reaches encoder/{modality}: {missing}"
        norm = torch.stack([p.grad.norm() for p in params.values()]).norm()
        assert norm > 0, f"{fusion}: zero gradient in encoder/{modality}"
