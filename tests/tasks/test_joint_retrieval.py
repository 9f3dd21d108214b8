"""Retrieval towers started from a CLIP/SigLIP joint space, and SigLIP's sigmoid loss (tasks/retrieval.py)."""
from __future__ import annotations

import math

import pytest
import torch

from crossmodal_cli.encoders.clip import JointSpace
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import ModelOutput
from crossmodal_cli.tasks.retrieval import Retrieval, Towers, sigmoid_loss


def spaces(bias: float | None) -> dict[str, JointSpace]:
    torch.manual_seed(0)
    return {m: JointSpace(torch.randn(5, d), logit_scale=math.log(20.0), logit_bias=bias,
                          loss="sigmoid" if bias is not None else "infonce", model={"model_type": "x"})
            for m, d in (("image", 7), ("text", 6))}


def test_the_sigmoid_loss_is_siglips_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    expected = -(torch.nn.functional.logsigmoid(torch.tensor([2.0, 1.0, -0.5, 3.0]))).sum() / 2
    assert sigmoid_loss(logits).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("bias", [None, -4.0])
def test_towers_started_from_a_joint_space_score_as_the_model_does(bias):
    """image @ text.T = exp(logit_scale) x cosine of the projected features (+ the bias for the sigmoid loss)."""
    space = spaces(bias)
    towers = Towers({"image": 7, "text": 6}, 5, 0.07, bias=0.0 if bias is not None else None)
    towers.start_from(space)
    pooled = {"image": torch.randn(3, 7), "text": torch.randn(3, 6)}
    out = towers(pooled)
    unit = {m: torch.nn.functional.normalize(pooled[m] @ space[m].projection.T, dim=-1) for m in pooled}
    expected = 20.0 * unit["image"] @ unit["text"].T + (bias or 0.0)
    assert torch.allclose(out[:, 0] @ out[:, 1].T, expected, atol=1e-5)
    task = Retrieval(embed_dim=5, loss="sigmoid" if bias is not None else "infonce")
    assert task.outputs(ModelOutput(out)).shape == (3, 2, 5)  # the bias coordinate is not an embedding's


def test_a_retrieval_keeps_its_defaults_and_refuses_unknown_options():
    task = Retrieval()
    assert task.state() == {} and task.objective == "infonce"
    assert Retrieval(loss="auto").objective == "infonce"  # until SigLIP encoders decide otherwise
    with pytest.raises(CrossmodalError, match="task.loss=hinge: use infonce or sigmoid or auto"):
        Retrieval(loss="hinge")
