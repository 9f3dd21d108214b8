"""The model parts declare their interfaces: a user's encoder or fusion outside them is refused in one line at
start-up; retrieval's model has no fusion; fusions declare summary() and gates; top_k is the task's to allow."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from crossmodal_cli.encoders import Encoded, Encoder
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.factory import architectures_of, build_model, check_buildable
from crossmodal_cli.fusion import Fusion
from crossmodal_cli.inference import check_top_k
from crossmodal_cli.paths import config_dir
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.tasks.regression import Regression
from crossmodal_cli.tasks.retrieval import Retrieval
from tests.conftest import settings_of


class PlainEncoder(nn.Module):
    """A user's encoder that has out_dim and forward but does not subclass Encoder."""

    def __init__(self, **options):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.out_dim = 4

    def forward(self, images):
        pooled = self.proj(images.float().mean((2, 3)))
        return Encoded(pooled=pooled, tokens=pooled[:, None])


class UserEncoder(PlainEncoder, Encoder):
    """The same encoder declared as an Encoder: out_dim and forward are all it writes."""


class PlainFusion(nn.Module):
    def __init__(self, in_dims, **options):
        super().__init__()
        self.out_dim = 4

    def forward(self, encoded, present=None):
        return sum(e.pooled for e in encoded.values())


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return settings_of(compose("train", overrides=list(overrides)))


def test_an_encoder_that_is_not_an_encoder_is_refused_in_one_line_at_start_up():
    cfg = compose_train("encoder.image._target_=tests.test_interfaces.PlainEncoder")
    expected = (r"^encoder/image: tests.test_interfaces.PlainEncoder is not a crossmodal_cli.encoders.base.Encoder; "
                r"subclass it \(set out_dim, write forward\(x\) -> Encoded; layer_groups and architecture are "
                r"optional\)$")
    with pytest.raises(CrossmodalError, match=expected):
        check_buildable(cfg, ["image"])
    with pytest.raises(CrossmodalError, match=expected):
        build_model(cfg, ["image"], Classification.with_classes(2), None)


def test_a_user_encoder_that_subclasses_encoder_trains_with_the_defaults():
    cfg = compose_train("encoder.image._target_=tests.test_interfaces.UserEncoder")
    check_buildable(cfg, ["image"])
    model = build_model(cfg, ["image"], Classification.with_classes(2), None)
    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["encoder/image/0", "fusion+head"]
    assert architectures_of(model) == {"image": None}
    out = model({"image": torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)})
    assert out.logits.shape == (2, 2)


def test_a_fusion_that_is_not_a_fusion_is_refused_in_one_line():
    cfg = compose_train("fusion._target_=tests.test_interfaces.PlainFusion")
    with pytest.raises(CrossmodalError, match=r"^fusion: tests.test_interfaces.PlainFusion is not a "
                                              r"crossmodal_cli.fusion.Fusion; subclass it"):
        build_model(cfg, ["image"], Classification.with_classes(2), None)


def test_retrieval_builds_a_model_without_fusion_whose_head_reads_the_pooled_outputs():
    from crossmodal_cli.data.modalities import train_wordpiece

    cfg = compose_train("task=retrieval", "modalities=[image,text]")
    tok = train_wordpiece(["a red thing"], vocab_size=40, lowercase=True)
    task = Retrieval(embed_dim=8)
    assert task.uses_fusion is False and Classification.with_classes(2).uses_fusion is True
    model = build_model(cfg, ["image", "text"], task, tok).eval()
    assert model.fusion is None and model.parameter_counts()["fusion"] == 0
    keys = list(model.state_dict())
    assert not any(k.startswith("fusion.") for k in keys) and any(k.startswith("head.proj.image") for k in keys)
    text = tok(["a red thing", "a thing"], padding=True, return_tensors="pt")
    inputs = {"image": torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),
              "text": {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}}
    encoded = model.encode(inputs)
    fused = model.fuse(encoded)
    assert set(fused) == {"image", "text"} and all(torch.equal(fused[m], encoded[m].pooled) for m in fused)
    assert model.head_outputs(fused).logits.shape == (2, 2, 8)


def test_fusions_declare_summary_and_gates():
    from crossmodal_cli.fusion.concat import ConcatFusion
    from crossmodal_cli.fusion.gated import GatedFusion
    from crossmodal_cli.fusion.weighted import WeightedFusion

    dims = {"a": 3, "b": 3}
    concat, gated, weighted = ConcatFusion(dims, 4, 8, 0.0), GatedFusion(dims, 4, 8, 0.0), WeightedFusion(dims, 4, 8,
                                                                                                           0.0)
    assert all(isinstance(f, Fusion) for f in (concat, gated, weighted))
    assert concat.summary() == {} and not concat.has_gates and concat.last_gates is None
    assert weighted.summary() == {"weight/a": 0.5, "weight/b": 0.5}
    assert gated.has_gates and gated.last_gates is None
    gated({m: Encoded(pooled=torch.randn(5, 3), tokens=torch.randn(5, 1, 3)) for m in dims})
    assert gated.last_gates.shape == (5, 2)


def test_top_k_is_the_tasks_to_allow():
    check_top_k(Classification.with_classes(3), 0, "x")
    check_top_k(Classification.with_classes(3), 3, "x")
    with pytest.raises(CrossmodalError, match=r"^predict.top_k=4: the checkpoint has 3 classes$"):
        check_top_k(Classification.with_classes(3), 4, "x")
    with pytest.raises(CrossmodalError, match=r"^predict.top_k=2: only a classification checkpoint has labels to "
                                              r"rank \(this one: crossmodal_cli.tasks.regression.Regression\)$"):
        check_top_k(Regression(), 2, "crossmodal_cli.tasks.regression.Regression")
    with pytest.raises(CrossmodalError, match=r"^predict.top_k=2: Regression has no labels to rank$"):
        Regression().top_k(torch.zeros(1, 1), 2)
