"""The CUDA path, each piece asserting a real outcome: training per precision and per fusion, the fused optimizer's
on-device skip of a non-finite step, device-side image normalisation and log-mel features, exact resume, a CUDA
checkpoint evaluated on a CPU, torch.compile, torchrun with NCCL, and the out-of-memory message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train
from cuda_commands import command, ok
from tests.conftest import write_pairs_csv

pytestmark = pytest.mark.gpu
STRATEGIES = sorted(p.stem for p in Path(config_dir(), "fusion").glob("*.yaml"))
FAST = {"trainer.num_workers": "2", "trainer.progress_bar": "false", "trainer.batch_size": "16",
        "data.image_size": "32", "trainer.device": "cuda", "trainer.log_every_n_steps": "2"}


def fast(*overrides: str) -> list[str]:
    """FAST with `overrides` (KEY=VALUE) replacing its values: Hydra refuses a key given twice."""
    values = {**FAST, **dict(o.split("=", 1) for o in overrides)}
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory) -> Path:
    """600 demo rows (image, text, audio) labelled with their (shape, colour) pair: nine classes that need image and
    text together (tests/conftest.py)."""
    return write_pairs_csv(tmp_path_factory.mktemp("pairs") / "demo", num_samples=600)


def train_here(csv: Path, run_dir: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", *fast(*overrides)])
    return train(cfg, run_dir)


def epoch_losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["train/loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_each_precision_trains_on_cuda_and_lowers_the_loss(precision, demo_csv, tmp_path):
    results = train_here(demo_csv, tmp_path, f"trainer.precision={precision}", "trainer.max_epochs=5")
    losses = epoch_losses(tmp_path)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < 0.7 * losses[0], f"{precision}: {losses}"
    assert results["val"]["accuracy"] > 0.5, results["val"]  # 9 classes: chance 0.11, one modality alone <= 0.33
    weights = load_checkpoint(tmp_path / "checkpoints/last.ckpt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_each_fusion_trains_on_cuda_with_bf16(fusion, demo_csv, tmp_path):
    train_here(demo_csv, tmp_path, f"fusion={fusion}", "trainer.precision=bf16", "trainer.max_epochs=4")
    losses = epoch_losses(tmp_path)
    assert losses[-1] < 0.8 * losses[0], f"{fusion}: {losses}"


def test_a_non_finite_loss_is_skipped_on_the_device_and_counted_at_the_next_log_point(tmp_path):
    """The fused AdamW (CUDA's default) skips the step in its kernel: the weights of the bad step are those before
    it, the skip is counted at the next log point, and no step waits for the host."""
    from crossmodal_cli.data.dataset import make_loader
    from crossmodal_cli.engine.checkpoint import Checkpointer
    from crossmodal_cli.engine.loop import Trainer
    from crossmodal_cli.engine.reporting import RunReporter
    from crossmodal_cli.model import ModelOutput
    from crossmodal_cli.tasks.classification import Classification

    class Rows(torch.utils.data.Dataset):
        def __init__(self, bad: set[int]):
            g = torch.Generator().manual_seed(0)
            self.y = torch.arange(64) % 2
            self.x = torch.randn(64, 4, generator=g) + 2.0 * self.y[:, None]
            self.bad = bad

        def __len__(self):
            return 64

        def __getitem__(self, key):
            i = key[1]
            return {"x": torch.full((4,), float("nan")) if i in self.bad else self.x[i], "y": int(self.y[i]), "i": i}

    def collate(items):
        return {"inputs": {"x": torch.stack([it["x"] for it in items])},
                "target": torch.tensor([it["y"] for it in items]), "index": torch.tensor([it["i"] for it in items])}

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, inputs, present=None):
            return ModelOutput(self.linear(inputs["x"]))

    def trainer(folder: Path, bad: set[int], log_every: int) -> Trainer:
        from tests.engine.test_loop import settings as loop_settings

        placed = loop_settings(max_epochs=1, grad_clip=1.0, log_every_n_steps=log_every, precision="bf16",
                               device=torch.device("cuda"))
        loader = make_loader(Rows(bad), collate, batch_size=8, shuffle=False, num_workers=0, seed=0,
                             pin_memory=True, drop_last=True)
        val = make_loader(Rows(set()), collate, batch_size=16, shuffle=False, num_workers=0, seed=0, pin_memory=True)
        model = Toy().cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return Trainer(model, Classification.with_classes(2), loader, val, optimizer, scheduler,
                       reporter=RunReporter(folder, tensorboard=False),
                       checkpointer=Checkpointer(folder / "checkpoints", 0, {}), **placed)

    # the fourth batch (rows 24-31) holds a NaN row; logging every 5 steps, the skip is seen at step 5
    lazy = trainer(tmp_path / "lazy", {27}, log_every=5)
    assert lazy.non_finite.on_device
    seen = []
    lazy.reporter.scalars = lambda values, step: seen.append((step, lazy.progress.skipped_steps))
    lazy.fit()
    assert lazy.progress.skipped_steps == 1 and lazy.progress.step == 8
    assert seen[0] == (5, 1), seen  # counted at the first log point after the bad step
    assert all(torch.isfinite(p).all() for p in lazy.model.parameters())
    # skipped in the kernel = not applied (AdamW's step count and moments untouched): the weights of the
    # synchronous path, which checks each loss on the host and never calls the optimizer for the bad batch
    synchronous = trainer(tmp_path / "sync", {27}, log_every=5)
    synchronous.non_finite.on_device = False
    synchronous.fit()
    assert synchronous.progress.skipped_steps == 1
    for a, b in zip(lazy.model.parameters(), synchronous.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_image_normalisation_and_log_mel_on_the_device_equal_the_cpu(demo_csv):
    from crossmodal_cli.encoders.audio import MelCNN
    from crossmodal_cli.encoders.image import _Normalise

    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    normalise = _Normalise(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    torch.testing.assert_close(normalise.cuda()(images.cuda()).cpu(), normalise.cpu()(images), rtol=1e-6, atol=1e-5)
    wave = torch.randn(4, 8000) * 0.1
    mel = MelCNN(sample_rate=8000, n_mels=32, n_fft=256, hop_ms=10, channels=[8]).eval()
    on_cpu = mel.log_mel(wave)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # computed in fp32 even under autocast
        on_gpu = mel.cuda().log_mel(wave.cuda())
    assert on_gpu.dtype == torch.float32 and on_gpu.shape == on_cpu.shape
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-3)


def test_a_cuda_run_resumes_bit_identically_and_its_checkpoint_evaluates_on_a_cpu(tmp_path):
    """Two epochs straight, and one epoch then `resume=` with trainer.max_epochs=2: the same weights, optimizer
    state and progress to the bit (trainer.deterministic=true; a constant learning rate, since a schedule's length
    follows max_epochs); CUDA's RNG (dropout, modality dropout) comes back from the checkpoint."""
    args = ["data.demo.num_samples=200", "trainer.batch_size=16", "trainer.num_workers=0",
            "trainer.progress_bar=false", "trainer.device=cuda", "trainer.deterministic=true", "scheduler=none",
            "trainer.modality_dropout=0.2", "data.augment=true"]
    ok(command("train", *args, "trainer.max_epochs=2", "hydra.run.dir=straight", cwd=tmp_path))
    ok(command("train", *args, "trainer.max_epochs=1", "hydra.run.dir=split", cwd=tmp_path))
    ok(command("train", "resume=split", "trainer.max_epochs=2", cwd=tmp_path))
    straight = load_checkpoint(tmp_path / "straight/checkpoints/last.ckpt")
    resumed = load_checkpoint(tmp_path / "split/checkpoints/last.ckpt")
    assert straight["progress"] == resumed["progress"]
    for key, value in straight["model"].items():
        assert torch.equal(value.cpu(), resumed["model"][key].cpu()), key
    for key, value in straight["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(torch.as_tensor(tensor).cpu(), torch.as_tensor(resumed["optimizer"]["state"][key][name]).cpu())

    trained = json.loads((tmp_path / "straight/metrics.json").read_text())["test"]
    ok(command("evaluate", f"ckpt={tmp_path / 'straight/checkpoints/best.ckpt'}", "trainer.device=cpu",
               "importance=false", "hydra.run.dir=eval-cpu", cwd=tmp_path,
               env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}))
    on_cpu = json.loads((tmp_path / "eval-cpu/metrics.json").read_text())
    on_cpu = on_cpu.get("test", on_cpu)
    assert on_cpu["accuracy"] == pytest.approx(trained["accuracy"], abs=0.07)  # bf16 on the GPU, fp32 on the CPU:
    # a near-tied row may flip (the test split has about 30 rows)
    assert on_cpu["loss"] == pytest.approx(trained["loss"], rel=0.05)


def test_compiled_model_trains(demo_csv, tmp_path):
    """trainer.compile=true through cmtrain's train(): trains and validates (each new shape and the eval-mode graph
    compile once: with all three towers this test took 207 s of an H200 machine's gpu-check on 2026-12-04, the
    longest by far, so it trains the image and text towers alone)."""
    results = train_here(demo_csv, tmp_path, "trainer.compile=true", "trainer.max_epochs=3", "modalities=[image,text]")
    losses = epoch_losses(tmp_path)
    assert losses[-1] < 0.8 * losses[0], losses
    assert results["val"]["accuracy"] > 0.3, results["val"]  # 9 classes: chance 0.11


def test_torchrun_with_one_process_trains_through_nccl_and_writes_one_run_folder(demo_csv, tmp_path):
    ok(command("train", "data=csv", f"data.csv={demo_csv}", *fast("trainer.max_epochs=2"), "hydra.run.dir=run",
               cwd=tmp_path, prefix=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1")))
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    log = (tmp_path / "run/train.log").read_text()
    assert "torchrun: 1 processes (backend" in log and "nccl" in log.split("torchrun: 1 processes")[1], log[-2000:]
    assert len(epoch_losses(tmp_path / "run")) == 2
    assert (tmp_path / "run/checkpoints/best.ckpt").is_file()


def test_two_processes_on_one_gpu_are_refused_in_one_line(demo_csv, tmp_path):
    if torch.cuda.device_count() > 1:
        pytest.skip("this machine has a GPU for each process")
    proc = command("train", "data=csv", f"data.csv={demo_csv}", *fast(), "hydra.run.dir=run", cwd=tmp_path,
                   prefix=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert proc.returncode != 0
    assert "error: torchrun started 2 processes on this machine but it has 1 GPU(s): use --nproc_per_node=1" \
           in proc.stderr, proc.stderr[-2000:]


def test_running_out_of_gpu_memory_is_one_line(demo_csv, tmp_path):
    """A batch that cannot fit in the memory this process may use (set_per_process_memory_fraction) ends with the
    one-line message and exit status 2, not a traceback."""
    script = ("import sys, torch; torch.cuda.set_per_process_memory_fraction(0.004); "
              "from crossmodal_cli.train import main; main()")
    proc = subprocess.run(
        [sys.executable, "-c", script, "data=csv", f"data.csv={demo_csv}", "encoder/image=resnet18",
         *fast("data.image_size=224", "trainer.batch_size=256", "trainer.precision=fp32"), "hydra.run.dir=run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: out of GPU memory with trainer.batch_size=256: lower it (e.g. "
                                "trainer.batch_size=128 trainer.accumulate_grad_batches=2"), proc.stderr[-2000:]
