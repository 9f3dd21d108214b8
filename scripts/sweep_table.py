#!/usr/bin/env python3
"""Print a Markdown table comparing the jobs of `cmtrain -m` sweeps (the table in docs/fusion.md comes from here).

    python scripts/sweep_table.py multirun/fusion [multirun/unimodal ...] [--sort val/accuracy]

One row per finished job (a folder with metrics.json), in job order: the overrides that differ between jobs,
validation and test value of the monitored metric of best.ckpt (the task's: accuracy for classification, mae for
regression, ...; read from metrics.json, or the job's stored config for runs written before it was recorded), its
epoch, parameters (all, and the fusion's), the median training
seconds per epoch from metrics.jsonl, and what the fusion reports about itself (e.g. learned modality weights).
When `seed` is swept, jobs that differ only in their seed share one row: mean ± standard deviation (the median
for seconds). Jobs without metrics.json (failed or still running) are listed below the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

LOWER_IS_BETTER = {"loss", "mae", "rmse", "hamming_loss", "median_rank"}  # --sort puts the smallest first


def load_job(folder: Path) -> dict:
    """One job's overrides (dict), metrics.json and per-epoch seconds; SystemExit naming the file if unreadable."""
    path = folder / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text()) or []
        path = folder / "metrics.json"
        metrics = json.loads(path.read_text())
        path = folder / "metrics.jsonl"
        epochs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        seconds = [e["seconds"] for e in epochs]
        monitor = metrics.get("monitor")
        if monitor is None:
            path = folder / ".hydra" / "config.yaml"
            monitor = (yaml.safe_load(path.read_text())["trainer"].get("monitor")) or "val/accuracy"
        name = monitor.split("/", 1)[1]
        value = metrics["val"][name]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, IndexError) as err:
        raise SystemExit(f"{path}: not a readable cmtrain result ({type(err).__name__}: {err})") from None
    if not isinstance(value, (int, float)):
        raise SystemExit(f"{folder / 'metrics.json'}: val.{name} is not a number")
    return {"folder": folder, "overrides": dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides),
            "metrics": metrics, "seconds": seconds, "metric": name}


def find_jobs(sweeps: list[Path]) -> tuple[list[dict], list[Path]]:
    """Finished jobs (sorted by sweep, then job number) and folders of unfinished ones."""
    jobs, unfinished = [], []
    for sweep in sweeps:
        folders = [f for f in sweep.iterdir() if (f / ".hydra" / "overrides.yaml").is_file()]
        if not folders:
            raise SystemExit(f"{sweep}: no job folders (NUMBER/.hydra/overrides.yaml) found; is it a sweep dir?")
        for folder in sorted(folders, key=lambda f: (not f.name.isdigit(), int(f.name) if f.name.isdigit() else 0,
                                                     f.name)):
            if (folder / "metrics.json").is_file():
                jobs.append(load_job(folder))
            else:
                unfinished.append(folder)
    return jobs, unfinished


def _fmt(values: list, digits: int = 3) -> str:
    """mean, or mean ± standard deviation over seeds; – when there are no values."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _row(group: list[dict], name: str) -> list[str]:
    """The measured cells of one table row, from the jobs of one group (one job, or one per seed)."""
    metrics = [job["metrics"] for job in group]
    params = metrics[0].get("parameters", {})
    reports = {k: statistics.mean(m["fusion"][k] for m in metrics) for k in (metrics[0].get("fusion") or {})}
    return [_fmt([m["val"][name] for m in metrics]), _fmt([(m.get("test") or {}).get(name) for m in metrics]),
            _fmt([m.get("best_epoch") for m in metrics], 1 if len(group) > 1 else 0),
            f"{params['total'] / 1e6:.2f} M" if "total" in params else "–",
            f"{params['fusion'] / 1e3:.0f} k" if "fusion" in params else "–",
            f"{statistics.median(s for job in group for s in job['seconds']):.2f}",
            ", ".join(f"{k} {v:.2f}" for k, v in reports.items())]


def table(jobs: list[dict], seconds: bool = True) -> str:
    """Markdown table; the override columns are the keys whose values differ between jobs. Jobs that differ
    only in `seed` share a row: mean ± standard deviation over the seeds, and their count. Every job must monitor
    the same metric."""
    names = sorted({job["metric"] for job in jobs})
    if len(names) > 1:
        raise SystemExit(f"the jobs monitor different metrics ({', '.join(names)}); compare sweeps of one task")
    name = names[0]
    keys = list(dict.fromkeys(k for job in jobs for k in job["overrides"]))
    varying = [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1] or keys
    by_seed = "seed" in varying
    columns = [k for k in varying if k != "seed"] if by_seed else varying
    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        groups.setdefault(tuple(job["overrides"].get(k, "") for k in columns), []).append(job)
    header = [*(f"`{k}`" for k in columns), *(["seeds"] if by_seed else []), f"val {name}", f"test {name}",
              "best epoch", "parameters", "fusion parameters", "s / epoch", "fusion reports"]
    drop = [] if seconds else [header.index("s / epoch")]
    header = [h for i, h in enumerate(header) if i not in drop]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for key, group in groups.items():
        cells = [*key, *([str(len(group))] if by_seed else []), *_row(group, name)]
        cells = [c for i, c in enumerate(cells) if i not in drop]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (hydra.sweep.dir of cmtrain -m)")
    parser.add_argument("--sort", help="sort rows by this validation metric, best first (e.g. val/accuracy)")
    parser.add_argument("--no-seconds", action="store_true",
                        help="leave out the s / epoch column (e.g. for jobs that shared the machine with other work)")
    args = parser.parse_args(argv)
    for sweep in args.sweeps:
        if not sweep.is_dir():
            raise SystemExit(f"{sweep}: no such folder; pass the hydra.sweep.dir of a cmtrain -m run")
    jobs, unfinished = find_jobs(args.sweeps)
    if args.sort:
        split, name = args.sort.split("/", 1) if "/" in args.sort else ("val", args.sort)
        if any(name not in (job["metrics"].get(split) or {}) for job in jobs):
            raise SystemExit(f"--sort {args.sort}: not in every job's metrics.json")
        jobs.sort(key=lambda job: job["metrics"][split][name], reverse=name not in LOWER_IS_BETTER)
    if jobs:
        print(table(jobs, seconds=not args.no_seconds))
    for folder in unfinished:
        print(f"\nnot finished (no metrics.json): {folder}")
    return 0 if jobs else 1


if __name__ == "__main__":
    sys.exit(main())
