"""MultimodalModel: encoders -> fusion -> head, and modality dropout."""
from __future__ import annotations

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.fusion.concat import ConcatFusion
from crossmodal_cli.model import MultimodalModel


class Identity(nn.Module):
    out_dim = 3

    def forward(self, x):
        return Encoded(pooled=x, tokens=x[:, None])


def model(dropout=0.0):
    torch.manual_seed(0)
    return MultimodalModel({"a": Identity(), "b": Identity()}, ConcatFusion({"a": 3, "b": 3}, 4, 8, 0.0),
                           nn.Linear(8, 2), modality_dropout=dropout)


def test_forward_gives_logits_per_sample():
    out = model()({"a": torch.randn(5, 3), "b": torch.randn(5, 3)})
    assert out.logits.shape == (5, 2) and out.aux_logits == {}


def test_an_absent_modality_does_not_affect_the_output():
    m = model().eval()
    inputs = {"a": torch.randn(2, 3), "b": torch.randn(2, 3)}
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([False, True])}
    before = m(inputs, present).logits
    inputs["b"] = inputs["b"] + 5
    after = m(inputs, present).logits
    assert torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_modality_dropout_never_hides_every_modality_and_only_in_training():
    m = model(dropout=0.9)
    present = {"a": torch.ones(2000, dtype=torch.bool), "b": torch.ones(2000, dtype=torch.bool)}
    kept = m._drop_modalities(present)
    both = torch.stack([kept["a"], kept["b"]], 1)
    assert both.any(1).all() and (~both).any()
    dropped = present | {"a": torch.zeros(2000, dtype=torch.bool)}
    assert m._drop_modalities(dropped)["b"].all()  # the only present modality is kept
    m.eval()
    x = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    assert torch.equal(m(x).logits, m(x).logits)
