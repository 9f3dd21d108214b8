"""MultimodalModel: encoders -> fusion -> head, and modality dropout."""
from __future__ import annotations

import pytest
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


def test_modality_importance_masks_each_modality_and_reports_the_gates():
    """Removing modality b from a model whose label is in b alone drops accuracy to chance; removing a costs
    nothing; a gated fusion's mean gates come with the report."""
    from crossmodal_cli.fusion.gated import GatedFusion
    from crossmodal_cli.importance import modality_importance
    from crossmodal_cli.tasks.classification import Classification

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    target = torch.arange(64) % 2
    b = torch.randn(64, 3, generator=g) + 4.0 * target[:, None]  # b alone says the class
    a = torch.randn(64, 3, generator=g)
    net = MultimodalModel({"a": Identity(), "b": Identity()}, GatedFusion({"a": 3, "b": 3}, 4, 8, 0.0),
                          nn.Linear(8, 2))
    task = Classification.with_classes(2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        loss = nn.functional.cross_entropy(net({"a": a, "b": b}).logits, target)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    ones = torch.ones(16, dtype=torch.bool)
    loader = [{"inputs": {"a": a[i:i + 16], "b": b[i:i + 16]}, "present": {"a": ones, "b": ones},
               "target": target[i:i + 16], "index": torch.arange(i, i + 16)} for i in range(0, 64, 16)]
    report = modality_importance(net, loader, task, torch.device("cpu"), "fp32", ["a", "b"],
                                 {"accuracy": 1.0, "f1_macro": 1.0}, split="test", rows=64, modality_dropout=0.0)
    assert list(report["removed"]) == ["a", "b"] and report["trained_with_missing"] is False
    assert report["removed"]["b"]["metrics"]["accuracy"] <= 0.6 and report["removed"]["b"]["drop"]["accuracy"] >= 0.4
    assert report["removed"]["a"]["drop"]["accuracy"] <= 0.1
    gates = report["mean_gates"]
    assert set(gates) == {"gate/a", "gate/b"} and sum(gates.values()) == pytest.approx(1.0, abs=1e-5)
