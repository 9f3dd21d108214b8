#!/usr/bin/env python3
"""Measure what the frozen-feature cache buys when comparing fusions (the table in docs/benchmarks.md).

    python scripts/benchmark_cache.py --minilm DIR [--rows 3000] [--epochs 5] [--out benchmark-cache]

Builds the paraphrase data set (texts + 128 px images, `crossmodal_cli/data/paraphrase.py`), then runs, in this
order and on the same machine:
  1. one uncached job: MiniLM text encoder (frozen) + torchvision ResNet-18 (frozen; its weights from a file this
     script writes once, as a downloaded ImageNet file would be), concat fusion; both encoders run on every batch
     of every epoch;
  2. the 30-job sweep `cmtrain -m fusion=<all 10> seed=1,2,3 … trainer.feature_cache=true` into an empty cache;
and prints the wall-clock ratio sweep / uncached job and the ratio of the median epoch times (training seconds
from metrics.jsonl, uncached / cached), as a table and as JSON. Absolute times depend on the machine; the ratios
are what docs/benchmarks.md reports.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

from crossmodal_cli.data.paraphrase import make_paraphrase_data

FUSIONS = "concat,sum,weighted,product,gated,bilinear,attention,cross_attention,late,cascade"


def run(args: list[str], cwd: Path) -> float:
    """Run cmtrain with args; return its wall-clock seconds."""
    exe = shutil.which("cmtrain", path=str(Path(sys.executable).parent)) or "cmtrain"
    start = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cmtrain {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def epoch_seconds(run_dir: Path) -> list[float]:
    return [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", required=True, help="local folder of all-MiniLM-L6-v2 (config.json, weights)")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="benchmark-cache", help="work folder (data, runs, cache); emptied first")
    opts = parser.parse_args()
    out = Path(opts.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    csv = make_paraphrase_data(out / "data", opts.rows, image_size=128)
    torch.manual_seed(0)
    weights = out / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    common = ["data=csv", f"data.csv={csv}", "modalities=[image,text]", "encoder/text=hf",
              f"encoder.text.pretrained={Path(opts.minilm).resolve()}", "encoder/image=torchvision",
              "encoder.image.name=resnet18", f"encoder.image.weights={weights}", "encoder.image.image_size=128",
              "encoder.text.freeze=true",
              "encoder.image.freeze=true", "data.text.max_length=32", f"trainer.max_epochs={opts.epochs}",
              "trainer.progress_bar=false", f"trainer.cache_dir={out / 'cache'}"]
    uncached_s = run([*common, "fusion=concat", f"hydra.run.dir={out / 'uncached'}"], out)
    sweep_s = run(["-m", f"fusion={FUSIONS}", "seed=1,2,3", "trainer.feature_cache=true", *common,
                   f"hydra.sweep.dir={out / 'sweep'}"], out)
    uncached_epoch = statistics.median(epoch_seconds(out / "uncached"))
    cached_epochs = [s for job in sorted((out / "sweep").glob("[0-9]*")) for s in epoch_seconds(job)]
    cached_epoch = statistics.median(cached_epochs)
    result = {"rows": opts.rows, "epochs": opts.epochs, "jobs": 30,
              "uncached_job_seconds": round(uncached_s, 1), "cached_sweep_seconds": round(sweep_s, 1),
              "sweep_over_one_uncached_job": round(sweep_s / uncached_s, 2),
              "uncached_epoch_seconds": round(uncached_epoch, 2), "cached_epoch_seconds": round(cached_epoch, 3),
              "epoch_speedup": round(uncached_epoch / cached_epoch, 1)}
    print("| measure | value |\n| --- | --- |")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
