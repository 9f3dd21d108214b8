"""Learning-rate schedules: warm-up, shape and end value, from the real configs."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from crossmodal_cli.paths import config_dir


def lrs(name: str, steps_per_epoch=10, max_epochs=5, **overrides) -> list[float]:
    cfg = OmegaConf.merge(OmegaConf.load(f"{config_dir()}/scheduler/{name}.yaml"), overrides)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = instantiate(cfg)(optimizer, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs)
    values = []
    for _ in range(steps_per_epoch * max_epochs):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_warms_up_linearly_then_decays_to_min_ratio():
    values = lrs("cosine", warmup_epochs=1.0, min_lr_ratio=0.01)
    assert values[0] < 0.02 and values[:10] == sorted(values[:10])
    assert values[10] == pytest.approx(0.1)
    assert values[11:] == sorted(values[11:], reverse=True)
    assert values[-1] == pytest.approx(0.001, abs=2e-3)


def test_onecycle_peaks_after_warmup():
    values = lrs("onecycle", warmup_epochs=1.0)
    assert max(range(len(values)), key=values.__getitem__) in (9, 10)
    assert values[-1] < 0.01


def test_step_and_constant():
    step = lrs("step", warmup_epochs=0.0, step_epochs=2, gamma=0.1)
    assert step[0] == pytest.approx(0.1) and step[20] == pytest.approx(0.01) and step[40] == pytest.approx(0.001)
    constant = lrs("none", warmup_epochs=0.5)
    assert constant[0] < 0.1 and all(v == pytest.approx(0.1) for v in constant[5:])


@pytest.mark.parametrize("name", ["cosine", "onecycle", "none", "step"])
def test_warmup_is_clipped_to_a_fifth_of_a_short_run(name):
    """max_epochs=1 with warmup_epochs=1 used to be all warm-up (the lr never reached optimizer.lr)."""
    extra = {"step_epochs": 1, "gamma": 0.5} if name == "step" else {}
    values = lrs(name, steps_per_epoch=20, max_epochs=1, warmup_epochs=1.0, **extra)
    peak = max(range(len(values)), key=values.__getitem__)
    assert peak <= 4 and values[peak] == pytest.approx(0.1)
    if name in ("cosine", "onecycle"):
        assert values[-1] < 0.02


def test_cosine_keeps_every_groups_own_floor():
    """Two groups (e.g. an encoder at lr x 0.1 and the fusion at lr): each decays to min_lr_ratio x its own lr."""
    cfg = OmegaConf.merge(OmegaConf.load(f"{config_dir()}/scheduler/cosine.yaml"), {"warmup_epochs": 0.0,
                                                                                    "min_lr_ratio": 0.1})
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}])
    scheduler = instantiate(cfg)(optimizer, steps_per_epoch=10, max_epochs=2)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.1])


def test_cosine_with_one_rate_is_torchs_schedule():
    cfg = OmegaConf.merge(OmegaConf.load(f"{config_dir()}/scheduler/cosine.yaml"), {"warmup_epochs": 0.0,
                                                                                    "min_lr_ratio": 0.01})
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    a = instantiate(cfg)(ours, steps_per_epoch=7, max_epochs=3)
    b = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=21, eta_min=0.001)
    for _ in range(21):
        ours.step(), theirs.step(), a.step(), b.step()
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]  # bit for bit
