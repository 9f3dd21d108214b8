"""The training loop on a toy model: accumulation, precision, non-finite losses, out-of-memory, early stop."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from crossmodal_cli.data.dataset import make_loader
from crossmodal_cli.engine.checkpoint import Checkpointer, load_checkpoint
from crossmodal_cli.engine.loop import Trainer
from crossmodal_cli.engine.reporting import RunReporter
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import ModelOutput
from crossmodal_cli.tasks.classification import Classification


class Points(torch.utils.data.Dataset):
    """Two separable Gaussian blobs; keys are (epoch, row) like TableDataset's."""

    def __init__(self, n: int = 64, nan_rows: set[int] = frozenset()):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 4, generator=g) + 2.0 * self.y[:, None]
        self.nan_rows = nan_rows

    def __len__(self):
        return len(self.y)

    def __getitem__(self, key):
        _, i = key
        x = torch.full((4,), float("nan")) if i in self.nan_rows else self.x[i]
        return {"x": x, "y": int(self.y[i]), "i": i}


def collate(items):
    return {"inputs": {"x": torch.stack([it["x"] for it in items])},
            "target": torch.tensor([it["y"] for it in items]), "index": torch.tensor([it["i"] for it in items])}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)

    def forward(self, inputs, present=None):
        return ModelOutput(self.linear(inputs["x"]))


def settings(**changes) -> dict:
    """The trainer settings of these tests (configs/trainer/default.yaml with the values below) and the resolved
    device and precision: Trainer's keyword arguments."""
    from omegaconf import OmegaConf

    from crossmodal_cli.paths import config_dir
    from crossmodal_cli.settings import from_values
    from crossmodal_cli.settings.run import TrainerSettings

    values = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/trainer/default.yaml"), resolve=True)
    values.update(max_epochs=3, batch_size=8, accumulate_grad_batches=1, grad_clip=None, monitor="val/accuracy",
                  monitor_mode="max", early_stopping_patience=None, log_every_n_steps=1,
                  checkpoint_every_n_steps=None, max_bad_steps=3, progress_bar=False)
    placement = {"device": changes.pop("device", torch.device("cpu")), "precision": changes.pop("precision", "fp32")}
    values.update(changes)
    return {"settings": from_values(TrainerSettings, values), **placement}


def make_trainer(tmp_path, dataset=None, model=None, lr=0.1, fused=False, **changes) -> Trainer:
    s = settings(**changes)
    dataset = dataset or Points()
    train = make_loader(dataset, collate, batch_size=s["settings"].batch_size, shuffle=False, num_workers=0, seed=0,
                        pin_memory=False, drop_last=True)
    val = make_loader(Points(), collate, batch_size=16, shuffle=False, num_workers=0, seed=0, pin_memory=False)
    model = model or Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, **({"fused": True} if fused else {}))
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return Trainer(model, Classification.with_classes(2), train, val, optimizer, scheduler,
                   reporter=RunReporter(tmp_path, tensorboard=False),
                   checkpointer=Checkpointer(tmp_path / "checkpoints", 0, {}), **s)


def test_it_learns_and_records_every_epoch(tmp_path):
    progress = make_trainer(tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and progress.step == 24
    assert records[-1]["val/accuracy"] > 0.9
    assert load_checkpoint(tmp_path / "checkpoints/best.ckpt")["progress"]["best"] == progress.best


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    full = make_trainer(tmp_path / "a", batch_size=8, max_epochs=1)
    half = make_trainer(tmp_path / "b", batch_size=4, accumulate_grad_batches=2, max_epochs=1)
    full.fit(), half.fit()
    assert full.progress.step == half.progress.step == 8
    for a, b in zip(full.model.parameters(), half.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_train_on_cpu(tmp_path, precision):
    trainer = make_trainer(tmp_path, precision=precision, grad_clip=1.0)
    trainer.fit()
    assert trainer.progress.best > 0.9
    assert trainer.scaler.is_enabled() == (precision == "fp16")


def test_a_non_finite_loss_skips_the_step_and_is_counted(tmp_path):
    trainer = make_trainer(tmp_path, dataset=Points(nan_rows={3}), max_epochs=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.progress.skipped_steps == 1 and trainer.progress.step == 7
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["skipped_steps"] == 1


def test_consecutive_non_finite_losses_stop_with_the_last_good_state_saved(tmp_path):
    trainer = make_trainer(tmp_path, dataset=Points(nan_rows=set(range(16, 64))), max_bad_steps=3)
    with pytest.raises(CrossmodalError, match=r"3 consecutive non-finite losses \(trainer.max_bad_steps=3\)"):
        trainer.fit()
    saved = load_checkpoint(tmp_path / "checkpoints/last.ckpt")
    assert saved["progress"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_with_a_fused_optimizer_steps_are_skipped_on_the_device(tmp_path):
    """No host sync per step: the fused kernel skips the non-finite step itself; the schedule still advances, and
    the skip is counted at the next log point; the same weights as the synchronous path otherwise."""
    lazy = make_trainer(tmp_path / "lazy", dataset=Points(nan_rows={3}), max_epochs=1, fused=True,
                        log_every_n_steps=4)
    assert lazy.non_finite.on_device and not make_trainer(tmp_path / "sync").non_finite.on_device
    lazy.fit()
    assert lazy.progress.skipped_steps == 1 and lazy.progress.step == 8
    assert all(torch.isfinite(p).all() for p in lazy.model.parameters())
    plain, fused = make_trainer(tmp_path / "a", max_epochs=1), make_trainer(tmp_path / "b", max_epochs=1, fused=True)
    plain.fit(), fused.fit()
    for a, b in zip(plain.model.parameters(), fused.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    stopping = make_trainer(tmp_path / "stop", dataset=Points(nan_rows=set(range(16, 64))), max_bad_steps=3,
                            fused=True, log_every_n_steps=4)
    with pytest.raises(CrossmodalError, match=r"consecutive non-finite losses \(trainer.max_bad_steps=3\)"):
        stopping.fit()
    saved = load_checkpoint(tmp_path / "stop/checkpoints/last.ckpt")
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert saved["progress"]["skipped_steps"] >= 3
    synchronous = make_trainer(tmp_path / "sync-stop", dataset=Points(nan_rows=set(range(16, 64))), max_bad_steps=3)
    with pytest.raises(CrossmodalError):
        synchronous.fit()
    reference = load_checkpoint(tmp_path / "sync-stop/checkpoints/last.ckpt")["model"]
    for key, value in reference.items():  # skipped on the device = not applied: the weights of the 2 good steps
        assert torch.allclose(saved["model"][key], value, atol=1e-6), key


def test_out_of_memory_names_the_batch_size_and_what_to_change(tmp_path):
    class Hungry(Toy):
        def forward(self, inputs, present=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(CrossmodalError, match=r"out of GPU memory with trainer.batch_size=8: lower it \(e.g. "
                                              r"trainer.batch_size=4 trainer.accumulate_grad_batches=2"):
        make_trainer(tmp_path, model=Hungry()).fit()


def test_early_stopping_after_patience(tmp_path):
    trainer = make_trainer(tmp_path, lr=0.0, max_epochs=10, early_stopping_patience=2)
    progress = trainer.fit()
    assert progress.epoch - 1 == 3 and progress.best_epoch == 1 and progress.stale == 2


def test_a_search_pruner_stops_training_after_the_epoch_it_answers_true(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=6)
    seen = []
    trainer.prune = lambda epoch, value, last: seen.append((epoch, value)) or epoch == 2
    progress = trainer.fit()
    assert [e for e, _ in seen] == [1, 2] and all(isinstance(v, float) for _, v in seen)
    assert progress.pruned_at == 2 and progress.epoch - 1 == 2
    assert load_checkpoint(tmp_path / "checkpoints/last.ckpt")["progress"]["epoch"] == 3  # epoch 2 was saved


def test_keep_last_k_keeps_the_most_recent_epoch_snapshots(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=4)
    trainer.checkpointer.keep_last_k = 2
    trainer.fit()
    snapshots = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch-*.ckpt"))
    assert snapshots == ["epoch-003.ckpt", "epoch-004.ckpt"]
    assert load_checkpoint(tmp_path / "checkpoints/epoch-003.ckpt")["progress"]["epoch"] == 4  # next to run
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_checkpoint_every_n_steps_writes_last_mid_epoch(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_epochs=1, checkpoint_every_n_steps=3)
    saved = []
    original = trainer.checkpointer.save
    monkeypatch.setattr(trainer.checkpointer, "save", lambda state, **kw: (saved.append(
        (state["progress"]["step"], kw.get("epoch_end"))), original(state, **kw)))
    trainer.fit()
    assert saved == [(3, None), (6, None), (8, 1)]


def test_speed_settings_keep_parameter_names_and_outputs():
    """trainer.channels_last=true (on CPU here) and trainer.compile=true change the memory format and the
    execution, not what is computed nor the parameter names a checkpoint stores."""
    import shutil

    from omegaconf import OmegaConf

    from crossmodal_cli.encoders.image import TinyCNN
    from crossmodal_cli.fusion.concat import ConcatFusion
    from crossmodal_cli.model import MultimodalModel
    from crossmodal_cli.engine.runtime import speed_settings

    def build():
        torch.manual_seed(0)
        return MultimodalModel({"image": TinyCNN(channels=[8, 16], mean=[0.5] * 3, std=[0.5] * 3)}, ConcatFusion({"image": 16}, 8, 8,
                               0.0), nn.Linear(8, 2)).eval()

    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    reference = build()
    expected = reference({"image": images}).logits
    variants = {"channels_last": {"channels_last": True, "compile": False}}
    if shutil.which("g++") or shutil.which("c++"):  # torch.compile's CPU backend needs a C++ compiler
        variants["compile"] = {"channels_last": "auto", "compile": True}
    for name, settings in variants.items():
        model = build()
        speed_settings(model, OmegaConf.create({"tf32": True, **settings}), torch.device("cpu"), "fp32")
        conv = next(m for m in model.encoders["image"].modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (name == "channels_last")
        assert list(model.state_dict()) == list(reference.state_dict()), name
        assert torch.allclose(model({"image": images}).logits, expected, atol=1e-4), name
