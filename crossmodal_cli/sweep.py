"""`cmsweep DIR [DIR ...]`: read the jobs of `cmtrain -m` sweeps and write summary.csv, summary.md, summary.png.

One row per configuration (the overridden values that differ between jobs); jobs that differ only in `seed` or in
`data.fold` (K-fold cross-validation, data/folds.py) share a row as mean ± standard deviation over the seeds, the
folds, or folds × seeds, with the number of runs. An Optuna trial its pruner stopped (metrics.json
`pruned_at_epoch`) is a row of its own with status `pruned` and the values of its best epoch so far. Rows are sorted by the monitored metric, best first,
in the direction each job's stored config gives (`trainer.monitor` / `trainer.monitor_mode` in `.hydra/config.yaml`;
runs that stored null there: metrics.json's "monitor"; max unless the metric is a loss or an error). A job
without metrics.json is a row of its own with its status (`failed`: its log has an ERROR line; `unfinished`:
still running, or stopped) and the last error or warning of its log.

Is the best configuration better than the runner-up beyond seed noise? The rule, also printed: the gap between the
two mean validation values must exceed twice its standard error, sqrt(s1²/n1 + s2²/n2) (Welch's t > 2, about a
95 % test with many seeds, a lenient one with two or three). With one seed per row, noise cannot be judged.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

import pandas as pd

from crossmodal_cli.errors import exit_on_user_error
from crossmodal_cli.sweep_jobs import Job, find_jobs

REPEATS = ("seed", "data.fold")  # jobs that differ only in these are runs of one configuration


def _mean_std(values: list) -> tuple[float, float]:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _measured(group: list[Job]) -> dict:
    """The measured columns of one configuration: every val/test metric (mean and std over its seeds), best epoch,
    epochs trained, training seconds (per job, summed over epochs; median per epoch), parameters, fusion reports."""
    first = group[0]
    row = {"monitor": first.monitor, "mode": first.mode}
    for split in ("val", "test"):
        names = dict.fromkeys(n for j in group for n, v in (j.metrics.get(split) or {}).items()
                              if isinstance(v, (int, float)))
        for name in names:
            values = [(j.metrics.get(split) or {}).get(name) for j in group]
            row[f"{split}/{name}"], row[f"{split}/{name} std"] = _mean_std(values)
    row["best_epoch"], row["best_epoch std"] = _mean_std([j.metrics.get("best_epoch") for j in group])
    row["epochs"] = statistics.mean(len(j.epochs) for j in group)
    per_epoch = [e["seconds"] for j in group for e in j.epochs if "seconds" in e]
    row["seconds"] = statistics.mean(sum(e.get("seconds", 0) for e in j.epochs) for j in group)
    row["seconds_per_epoch"] = statistics.median(per_epoch) if per_epoch else math.nan
    params = first.metrics.get("parameters") or {}
    row["parameters"], row["fusion_parameters"] = params.get("total", math.nan), params.get("fusion", math.nan)
    reports = [j.metrics.get("fusion") or {} for j in group]
    keys = sorted({k for report in reports for k in report})
    row["fusion_reports"] = ", ".join(f"{k} {statistics.mean(r[k] for r in reports if k in r):.2f}" for k in keys)
    return row


def summarise(jobs: list[Job]) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration (finished jobs grouped over seeds, sorted best first), then one row per failed or
    unfinished job. Returns the frame (mean and std of every val/test metric, …) and the configuration columns."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1] or keys
    columns = [k for k in varying if k not in REPEATS]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = tuple(job.overrides.get(k, "") for k in columns)
        groups.setdefault(key if job.status == "done" else (*key, str(job.folder)), []).append(job)
    rows = []
    for key, group in groups.items():
        first = group[0]
        row = {k: v for k, v in zip(columns, key)}
        row.update(status=first.status, seeds=len(group), error=first.error,
                   jobs="; ".join(str(j.folder) for j in group))
        for repeat in REPEATS:
            if repeat in varying and first.status != "done":
                row[repeat] = first.overrides.get(repeat, "")
        if first.metrics:
            row.update(_measured(group))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["by_seed"] = _repeats(varying)
    done = frame[frame.status == "done"]
    if len(done):
        monitor, mode = done.iloc[0]["monitor"], done.iloc[0]["mode"]
        order = done.sort_values(monitor, ascending=mode == "min", kind="stable").index
        frame = pd.concat([frame.loc[order], frame[frame.status != "done"]]).reset_index(drop=True)
        frame.attrs["by_seed"] = _repeats(varying)
    return frame, columns


def _repeats(varying: list[str]) -> str:
    """The header of the runs column: what the runs of one row differ in ('' when they are single runs)."""
    return {(True, False): "seeds", (False, True): "folds", (True, True): "folds × seeds"}.get(
        ("seed" in varying, "data.fold" in varying), "")


def verdict(frame: pd.DataFrame, columns: list[str]) -> str:
    """A plain-language line: is the best configuration separated from the runner-up beyond seed noise?"""
    done = frame[frame.status == "done"]
    if len(done) < 2:
        return "Only one finished configuration: nothing to compare."
    monitor = done.iloc[0]["monitor"]
    best, second = done.iloc[0], done.iloc[1]
    label = (lambda row: " ".join(f"{k}={_short(row[k])}" for k in columns) or "the first row")
    gap = abs(best[monitor] - second[monitor])
    head = f"Best by {monitor}: {label(best)} ({best[monitor]:.3f}), runner-up {label(second)} ({second[monitor]:.3f})"
    if min(best.seeds, second.seeds) < 2:
        return f"{head}; with one seed per configuration seed noise cannot be judged (sweep seed=42,1,2 to judge it)."
    error = math.sqrt(best[f"{monitor} std"] ** 2 / best.seeds + second[f"{monitor} std"] ** 2 / second.seeds)
    rule = "rule: the gap between the means must exceed twice its standard error, sqrt(s1²/n1 + s2²/n2)"
    if gap == 0:
        return f"{head}: a tie (the same mean over the seeds; tied rows keep the sweep's order), not separated."
    if gap > 2 * error:
        return f"{head}: separated beyond seed noise (gap {gap:.3f} > 2 × standard error {error:.3f}; {rule})."
    return f"{head}: not separated from seed noise (gap {gap:.3f} ≤ 2 × standard error {error:.3f}; {rule})."


def _cell(row, name: str, digits: int = 3) -> str:
    mean, std = row.get(name, math.nan), row.get(f"{name} std", math.nan)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _short(value) -> str:
    """An override value for the table: long floats (Optuna's choices) to 4 significant digits."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if "." in text and len(text) > 7 else text


def _count(value: float, scale: float, unit: str, digits: int) -> str:
    return "–" if value is None or math.isnan(value) else f"{value / scale:.{digits}f} {unit}"


def markdown(frame: pd.DataFrame, columns: list[str], *, seconds: bool = True, compact: bool = False) -> str:
    """The table. `compact`: the columns of the earlier scripts/sweep_table.py (docs/fusion.md's tables)."""
    done = frame[frame.status == "done"]
    name = done.iloc[0]["monitor"].split("/", 1)[1] if len(done) else "metric"
    by_seed = frame.attrs.get("by_seed", "")
    problems = (frame.status != "done").any()
    header = [*(f"`{k}`" for k in columns), *([by_seed] if by_seed else []), *(["status"] if problems else []),
              f"val {name}", f"test {name}", "best epoch"]
    header += ["parameters", "fusion parameters"] if compact else ["epochs", "parameters", "fusion parameters"]
    header += (["s / epoch"] if compact else ["seconds"]) if seconds else []
    header += ["fusion reports", *(["last error"] if problems else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for _, row in frame.iterrows():
        seeds = str(row.seeds) if row.status == "done" else \
            " ".join(f"{k.split('.')[-1]} {row[k]}" for k in REPEATS if k in frame.columns and row.get(k) == row.get(k))
        cells = [*(_short(row[k]) for k in columns), *([seeds] if by_seed else []), *([row.status] if problems else [])]
        if isinstance(row.get("monitor"), str):  # it has metrics: done, or pruned
            cells += [_cell(row, f"val/{name}"), _cell(row, f"test/{name}"),
                      _cell(row, "best_epoch", 1 if row.seeds > 1 else 0)]
            cells += [] if compact else [f"{row.epochs:g}"]
            cells += [_count(row.parameters, 1e6, "M", 2), _count(row.fusion_parameters, 1e3, "k", 0)]
            cells += ([f"{row.seconds_per_epoch:.2f}"] if compact else [f"{row.seconds:.1f}"]) if seconds else []
            cells += [row.fusion_reports]
        else:
            cells += ["–"] * (len(header) - len(cells) - 2) + [""]
        cells += [str(row.error).replace("|", "\\|")] if problems else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Horizontal bars of the monitored metric (val and test, mean ± std over seeds), best configuration on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame.status == "done"]
    name = done.iloc[0]["monitor"].split("/", 1)[1]
    labels = [" ".join(_short(row[k]) if len(columns) == 1 else f"{k}={_short(row[k])}" for k in columns) or str(i)
              for i, row in done.iterrows()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(done) + 1.4))
    positions = range(len(done))
    for offset, split, colour in ((-0.2, "val", "#4878d0"), (0.2, "test", "#ee854a")):
        means = done[f"{split}/{name}"] if f"{split}/{name}" in done else [math.nan] * len(done)
        stds = done[f"{split}/{name} std"] if f"{split}/{name} std" in done else None
        stds = None if stds is None or stds.isna().all() else stds.fillna(0)
        ax.barh([p + offset for p in positions], means, height=0.4, xerr=stds, color=colour, label=split,
                capsize=3)
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    runs = frame.attrs.get("by_seed") or "seeds"
    seeds = f", mean ± std over {int(done.seeds.max())} {runs}" if done.seeds.max() > 1 else ""
    ax.set_xlabel(f"{name} of best.ckpt{seeds} ({'higher' if done.iloc[0]['mode'] == 'max' else 'lower'} is better)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@exit_on_user_error
def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmsweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (hydra.sweep.dir of cmtrain -m)")
    parser.add_argument("--out", type=Path, help="folder for summary.csv/.md/.png (default: the first sweep folder)")
    parser.add_argument("--no-seconds", action="store_true",
                        help="leave out training times (e.g. for jobs that shared the machine with other work)")
    parser.add_argument("--compact", action="store_true",
                        help="print only the table of docs/fusion.md (job order, s / epoch), write no files")
    args = parser.parse_args(argv)
    jobs = find_jobs(args.sweeps)
    frame, columns = summarise(jobs)
    if args.compact:
        order = {str(j.folder): i for i, j in enumerate(jobs)}
        frame = frame.iloc[sorted(range(len(frame)), key=lambda i: order[frame.iloc[i].jobs.split("; ")[0]])]
        print(markdown(frame, columns, seconds=not args.no_seconds, compact=True))
        return 0
    out = args.out or args.sweeps[0]
    out.mkdir(parents=True, exist_ok=True)
    line = verdict(frame, columns)
    text = markdown(frame, columns, seconds=not args.no_seconds)
    frame.drop(columns=[c for c in ("seconds", "seconds_per_epoch") if args.no_seconds and c in frame]).to_csv(
        out / "summary.csv", index=False)
    (out / "summary.md").write_text(f"{text}\n\n{line}\n")
    if (frame.status == "done").any():
        plot(frame, columns, out / "summary.png")
    print(f"{text}\n\n{line}\n\nwritten: {out / 'summary.csv'}, {out / 'summary.md'}"
          f"{', ' + str(out / 'summary.png') if (frame.status == 'done').any() else ''}")
    return 0


def main() -> None:
    """Console script `cmsweep`."""
    try:
        sys.exit(run())
    except BrokenPipeError:  # `cmsweep DIR | head`: the reader stopped listening
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
