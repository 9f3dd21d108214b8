#!/usr/bin/env python3
"""Where training time goes: the data path, the model step, and cmtrain's loop, measured in one process.

    python scripts/benchmark.py [--preset small|cpu|reference] [--rows N] [--workers N] [--json FILE]
                                [--profile FILE] [--no-compile]
    make bench            # --preset reference on a GPU, cpu on a CPU

Builds a deterministic reference data set (JPEG photos of 320 x 240, 12-word captions, 10 classes: 20,000 rows
for `reference`) under --data, then measures, as samples per second:
  * loader: the training DataLoader cmtrain builds (`pipeline.loaders.make_split_loader`), alone, without a model, with 0
    workers (= one core) and with --workers workers; for the plain path (each JPEG decoded and resized per batch,
    texts tokenised per batch) and for `data.cache=preprocessed` (images decoded once into a memory-mapped array,
    texts tokenised once);
  * ceiling: cmtrain's `Trainer` (the same training step, optimizer, clipping and schedule) fed one batch that is
    already on the device, over and over: what the model can do when data costs nothing;
  * end-to-end: `crossmodal_cli.train.train()` — cmtrain itself — on the same model, with the preprocessed
    cache, --workers workers; the steady-state rate of its second epoch (metrics.jsonl `samples_per_second`, which
    counts training time only) and the share of it spent waiting for data (`data_wait_fraction`);
  * textbook: the loop a tutorial writes (PIL resize + ToTensor and the tokenizer per item, no workers, fp32).
and prints them as a table and JSON, with the ratios: loader per core x cores / ceiling, end-to-end / ceiling,
end-to-end / textbook and, on CUDA, bf16 / fp32 and compiled / eager (trainer.compile=true) of the ceiling. The model: ResNet-18 at 224 px + a 6-layer,
384-wide BERT, concat fusion (`reference` and `cpu`; `cpu` uses a smaller batch and fewer rows), or the tiny demo
encoders at 64 px (`small`, for the test suite). Absolute rates depend on the machine; docs/benchmarks.md reports
ratios measured in one run, with the command.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw

from crossmodal_cli.config.startup import resolve_monitor, run_settings
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.engine.checkpoint import Checkpointer
from crossmodal_cli.engine.distributed import Silent
from crossmodal_cli.engine.evaluation import to_device, total_loss
from crossmodal_cli.engine.loop import Trainer
from crossmodal_cli.engine.runtime import resolve_device, seed_everything, speed_settings
from crossmodal_cli.factory import build_model, build_optimizer, build_task
from crossmodal_cli.paths import config_dir
from crossmodal_cli.pipeline.data import absolute_data_paths, load_data
from crossmodal_cli.pipeline.inputs import build_tokenizer
from crossmodal_cli.pipeline.loaders import make_split_loader
from crossmodal_cli.train import train

PRESETS = {  # rows, batch, image size, model, steps timed per measurement
    "small": dict(rows=384, batch=32, size=64, model="tiny", steps=6),
    "cpu": dict(rows=1024, batch=32, size=224, model="reference", steps=8),
    "reference": dict(rows=20000, batch=256, size=224, model="reference", steps=30),
}
MODELS = {
    "reference": ["encoder/image=resnet18", "encoder/text=tiny_bert", "encoder.text.hidden_size=384",
                  "encoder.text.num_layers=6", "encoder.text.num_heads=6", "encoder.text.intermediate_size=1536"],
    "tiny": ["encoder/image=tiny_cnn", "encoder/text=tiny_bert"],
}
WORDS = [f"w{i:03d}" for i in range(400)]
CLASS_WORDS = ["apple", "bridge", "cloud", "desert", "engine", "forest", "garden", "harbor", "island", "jungle"]


def _reference_row(seed: int, i: int, rows: int, folder: Path) -> str:
    """Row i of the reference set: its JPEG written into folder/images, its CSV line returned. Each row draws from
    its own generator (seed, i), so rows can be made in any order, in parallel."""
    rng = np.random.default_rng([seed, i])
    label = int(rng.integers(10))
    a, b, c = rng.uniform(0, 255, 3)
    y, x = np.mgrid[0:240, 0:320]
    background = np.stack([(a + x * 0.3) % 255, (b + y * 0.5) % 255, np.full_like(x, c, dtype=float)], -1)
    background += rng.normal(0, 12, background.shape)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    r = int(rng.integers(30, 90))
    cx, cy = int(rng.integers(r, 320 - r)), int(rng.integers(r, 240 - r))
    colour = tuple(int(v) for v in np.asarray([label * 25, 255 - label * 25, (label * 70) % 255]))
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    image.save(folder / "images" / f"{i:05d}.jpg", quality=90)
    words = list(rng.choice(WORDS, 11))
    words.insert(int(rng.integers(12)), CLASS_WORDS[label])
    return f"images/{i:05d}.jpg,{' '.join(words)},c{label},{'val' if i >= rows - 64 else 'train'}"


def make_reference(folder: Path, rows: int, seed: int = 0) -> Path:
    """rows JPEG photos (320 x 240: a smooth random background, a class-coloured disc, noise) and 12-word captions
    (one word names the class); a label column of 10 classes and a split column (the last 64 rows: val). Made on
    every core (the same files whatever their number); skipped when folder already holds the same set."""
    csv = folder / "reference.csv"
    marker = folder / "reference.json"
    spec = {"rows": rows, "seed": seed, "version": 2}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return csv
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        lines = list(pool.map(_reference_row, repeat(seed), range(rows), repeat(rows), repeat(folder),
                              chunksize=64))
    csv.write_text("\n".join(["image_path,text,label,split", *lines]) + "\n")
    marker.write_text(json.dumps(spec))
    return csv


def config(csv: Path, preset: dict, overrides: list[str]) -> DictConfig:
    """The cmtrain config for this benchmark, composed as cmtrain composes it."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=csv", f"data.csv={csv}", f"data.image_size={preset['size']}", "data.text.max_length=64",
            "modalities=[image,text]", f"trainer.batch_size={preset['batch']}", "trainer.progress_bar=false",
            "trainer.log_every_n_steps=1000", "trainer.max_epochs=2", "scheduler=none", "data.validation_cache=null",
            *MODELS[preset["model"]], *overrides])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(cfg, False)
    cfg.modalities = ["image", "text"]
    return cfg


def typed(cfg: DictConfig):
    """The composed config as the settings cmtrain's parts read (data paths absolute, monitor resolved)."""
    settings = run_settings(cfg)
    settings = dataclasses.replace(settings, data=absolute_data_paths(settings.data))
    return dataclasses.replace(settings, trainer=resolve_monitor(settings.trainer, build_task(settings)))


def prepare(cfg: DictConfig):
    """(table, tokenizer, task) as cmtrain builds them."""
    cfg = typed(cfg)
    task = build_task(cfg)
    table = load_data(cfg.data, cfg.modalities, cfg.seed, task, keep=["train", "val"])
    tokenizer = build_tokenizer(cfg, table.splits["train"]["text"].tolist())
    return table, tokenizer, task


def loader_rate(cfg: DictConfig, table, tokenizer, workers: int, batches: int, device: torch.device) -> float:
    """Samples per second of cmtrain's training loader alone (batches moved to the device, nothing else)."""
    cfg = typed(cfg)
    loader = make_split_loader(table, "train", cfg, tokenizer, batch_size=cfg.trainer.batch_size, train=True,
                                     num_workers=workers, seed=cfg.seed, pin_memory=device.type == "cuda",
                                     drop_last=True)
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    to_device(next(iterator), device)  # the first batch pays for starting the workers
    start, seen = time.perf_counter(), 0
    for _, batch in zip(range(batches), iterator):
        to_device(batch, device)
        seen += batch["index"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = seen / (time.perf_counter() - start)
    del iterator, loader
    return rate


class ResidentLoader:
    """Stands in for the training DataLoader: the same batch, already on the device, `steps` times an epoch."""

    class _Sampler:
        def set_epoch(self, epoch: int, start: int = 0) -> None:
            pass

    def __init__(self, batch: dict, steps: int, batch_size: int):
        self.batch, self.steps, self.drop_last, self.sampler = batch, steps, True, self._Sampler()
        self.dataset = range(steps * batch_size)

    def __iter__(self):
        return iter([self.batch] * self.steps)

    def __len__(self) -> int:
        return self.steps


def ceiling_rate(cfg: DictConfig, table, tokenizer, task, device: torch.device, precision: str, steps: int) -> float:
    """Samples per second of cmtrain's Trainer fed one resident batch (after 2 warm-up steps)."""
    cfg = typed(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, table.modalities, task, tokenizer).to(device)
    speed_settings(model, cfg.trainer, device, precision)
    loader = make_split_loader(table, "train", cfg, tokenizer, batch_size=cfg.trainer.batch_size, train=True,
                                     num_workers=0, seed=cfg.seed, pin_memory=False, drop_last=True)
    loader.sampler.set_epoch(1)
    batch = to_device(next(iter(loader)), device)
    settings = dataclasses.replace(cfg.trainer, max_epochs=1)
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (2, steps):  # warm-up (compilation, allocator), then the timed epoch
            trainer = Trainer(model, task, ResidentLoader(batch, count, cfg.trainer.batch_size), [],
                              build_optimizer(cfg, model), _Constant(), settings, Silent(),
                              Checkpointer(Path(tmp), 0, {}), device=device, precision=precision)
            trainer._train_epoch(_NoStop())
            rates.append(trainer.progress.seen / trainer.progress.seconds)
    return rates[-1]


class _NoStop:
    requested = None


class _Constant:
    """A schedule that keeps the learning rate (the ceiling measures speed, not learning)."""

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}


def end_to_end(cfg: DictConfig, device: torch.device) -> tuple[float, float]:
    """cmtrain's train() for 2 epochs into a temporary folder: (samples/s of epoch 2, its data-wait share)."""
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run")
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["samples_per_second"], records[-1]["data_wait_fraction"]


def profile_end_to_end(cfg: DictConfig, device: torch.device, path: Path) -> None:
    """cmtrain end to end once more under torch.profiler (the host's threads and, on CUDA, the device): writes the
    operators with the most self time on the host and on the device to `path`, i.e. where the time of a step that
    falls short of the ceiling goes (the loader's wait shows as DataLoader.__next__, pinning as pin_memory, launch
    overhead as many short host operators). Its rates are not reported: the profiler slows what it watches."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        end_to_end(cfg, device)
    averages = prof.key_averages()
    parts = [f"cmtrain end to end under torch.profiler ({device.type}); operators by self time on the host",
             averages.table(sort_by="self_cpu_time_total", row_limit=30)]
    if device.type == "cuda":
        parts += ["operators by self time on the device", averages.table(sort_by="self_device_time_total",
                                                                           row_limit=30)]
    path.write_text("\n".join(parts) + "\n")


def textbook_rate(cfg: DictConfig, table, tokenizer, task, device: torch.device, steps: int) -> float:
    """A tutorial's loop: per item PIL open + resize + ToTensor + normalise and the tokenizer, no workers, fp32,
    plain AdamW; the same model."""
    import torchvision.transforms.functional as TF

    cfg = typed(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, table.modalities, task, tokenizer).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    frame = table.splits["train"]
    size, batch_size = cfg.data.image_size, cfg.trainer.batch_size
    timed = 0.0
    for step in range(steps + 1):
        start = time.perf_counter()
        rows = frame.iloc[(step * batch_size) % (len(frame) - batch_size):][:batch_size]
        images, ids, masks = [], [], []
        for path, text in zip(rows["image"], rows["text"]):
            with Image.open(path) as img:
                images.append(TF.to_tensor(img.convert("RGB").resize((size, size))))
            enc = tokenizer(text, padding="max_length", truncation=True, max_length=cfg.data.text.max_length,
                            return_tensors="pt")
            ids.append(enc["input_ids"][0])
            masks.append(enc["attention_mask"][0])
        inputs = {"image": (torch.stack(images) * 255).to(torch.uint8).to(device),
                  "text": {"input_ids": torch.stack(ids).to(device), "attention_mask": torch.stack(masks).to(device)}}
        target = torch.tensor(rows["target"].to_numpy(), device=device)
        loss = total_loss(task, model(inputs), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()  # a textbook loop reads the loss every step
        if step:  # the first step warms up
            timed += time.perf_counter() - start
    return steps * batch_size / timed


def say(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default=None, help="default: reference on CUDA, cpu otherwise")
    parser.add_argument("--rows", type=int, default=None, help="rows of the reference data (default: the preset's)")
    parser.add_argument("--workers", default="auto", help="DataLoader workers for the N-worker figures (auto)")
    parser.add_argument("--data", default="data/benchmark", help="folder of the reference data set")
    parser.add_argument("--cache-dir", default=None, help="preprocessed cache (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--no-compile", action="store_true", help="on CUDA, skip the compiled ceiling")
    parser.add_argument("--profile", default=None, help="also profile cmtrain end to end; its tables go here")
    opts = parser.parse_args()
    device = resolve_device("auto")
    preset = dict(PRESETS[opts.preset or ("reference" if device.type == "cuda" else "cpu")])
    preset["rows"] = opts.rows or preset["rows"]
    workers = resolve_workers(int(opts.workers) if opts.workers != "auto" else "auto")
    cores = os.cpu_count() or 1
    csv = make_reference(Path(opts.data).resolve() / f"rows-{preset['rows']}", preset["rows"])
    cache_dir = Path(opts.cache_dir or tempfile.mkdtemp(prefix="crossmodal-bench-"))
    precision = "bf16" if device.type == "cuda" else "fp32"
    batches = max(4, min(40, (preset["rows"] - 64) // preset["batch"] - 2))
    results: dict = {"preset": opts.preset or ("reference" if device.type == "cuda" else "cpu"), **preset,
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                     or platform.machine(), "cores": cores, "workers": workers, "torch": torch.__version__,
                     "precision": precision}

    plain = config(csv, preset, [f"trainer.precision={precision}"])
    table, tokenizer, task = prepare(plain)
    cached = config(csv, preset, [f"trainer.precision={precision}", "data.cache=preprocessed",
                                  f"data.cache_dir={cache_dir}"])
    say(f"measuring on {results['device']}: loaders")
    for name, cfg in (("plain", plain), ("preprocessed", cached)):
        if name == "preprocessed":  # build the cache once, outside the timing
            make_split_loader(table, "train", typed(cfg), tokenizer, batch_size=8, train=True, num_workers=0,
                                    seed=0, pin_memory=False)
        results[f"loader_{name}_0_workers"] = loader_rate(cfg, table, tokenizer, 0, batches, device)
        if workers:
            results[f"loader_{name}_{workers}_workers"] = loader_rate(cfg, table, tokenizer, workers, batches, device)
    save = partial(write_partial, results, cores, opts.json)
    save()
    say("the model alone (ceiling)")
    results["ceiling"] = ceiling_rate(cached, table, tokenizer, task, device, precision, preset["steps"])
    save()
    e2e_cfg = config(csv, preset, [f"trainer.precision={precision}", "data.cache=preprocessed",
                                   f"data.cache_dir={cache_dir}", f"trainer.num_workers={workers}"])
    say("cmtrain end to end (2 epochs)")
    results["end_to_end"], results["data_wait_fraction"] = end_to_end(e2e_cfg, device)
    save()
    say("a textbook loop")
    results["textbook"] = textbook_rate(plain, table, tokenizer, task, device, max(2, preset["steps"] // 2))
    save()
    if opts.profile:
        say(f"cmtrain end to end under the profiler -> {opts.profile}")
        profile_end_to_end(e2e_cfg, device, Path(opts.profile))
    if device.type == "cuda":  # last, the CUDA-only figures: the compiled ceiling's warm-up compiles for minutes
        say("the model alone in fp32 (TF32)")
        fp32 = config(csv, preset, ["trainer.precision=fp32"])
        fp32.trainer.monitor, fp32.trainer.monitor_mode = plain.trainer.monitor, plain.trainer.monitor_mode
        results["ceiling_fp32"] = ceiling_rate(fp32, table, tokenizer, task, device, "fp32", preset["steps"])
        save()
        if not opts.no_compile:
            say("the model alone, compiled (trainer.compile=true; the warm-up steps compile)")
            compiled = config(csv, preset, [f"trainer.precision={precision}", "trainer.compile=true"])
            compiled.trainer.monitor, compiled.trainer.monitor_mode = plain.trainer.monitor, plain.trainer.monitor_mode
            results["ceiling_compiled"] = ceiling_rate(compiled, table, tokenizer, task, device, precision,
                                                       preset["steps"])
            save()
    if not opts.cache_dir:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(table_text(results))
    print(json.dumps(results, indent=2))


def write_partial(results: dict, cores: int, path: str | None) -> None:
    """Recompute the ratios of what is measured so far and, with --json, rewrite the file: a run stopped midway
    (a GPU lease running out) still leaves every figure it measured."""
    ratios = {}
    if "ceiling" in results:
        ratios["loader_per_core_x_cores / ceiling"] = results["loader_preprocessed_0_workers"] * cores / results["ceiling"]
        if "end_to_end" in results:
            ratios["end_to_end / ceiling"] = results["end_to_end"] / results["ceiling"]
        if "ceiling_fp32" in results:
            ratios["bf16 / fp32 (ceiling)"] = results["ceiling"] / results["ceiling_fp32"]
        if "ceiling_compiled" in results:
            ratios["compiled / eager (ceiling)"] = results["ceiling_compiled"] / results["ceiling"]
    if "end_to_end" in results and "textbook" in results:
        ratios["end_to_end / textbook"] = results["end_to_end"] / results["textbook"]
    results["ratios"] = ratios
    if path:
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


def table_text(results: dict) -> str:
    rows = [(key.replace("_", " "), f"{value:,.1f} samples/s") for key, value in results.items()
            if isinstance(value, float) and key != "data_wait_fraction"]
    rows.append(("data wait (end-to-end)", f"{100 * results['data_wait_fraction']:.1f} % of training time"))
    rows += [(key, f"{value:.2f}") for key, value in results["ratios"].items()]
    width = max(len(k) for k, _ in rows)
    head = (f"{results['device']}, {results['cores']} cores, torch {results['torch']}, {results['precision']}, "
            f"batch {results['batch']}, {results['size']} px, model {results['model']}, {results['rows']} rows")
    return "\n".join([head, *(f"{k:<{width}}  {v:>24}" for k, v in rows)])


if __name__ == "__main__":
    main()
