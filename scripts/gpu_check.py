#!/usr/bin/env python3
"""`make gpu-check`: one prepared command that proves the CUDA path and measures it, leaving a report.

    python scripts/gpu_check.py [--out DIR] [--rows N] [--workers N] [--tests-timeout S] [--bench-timeout S]
    make gpu-check [OUT=DIR] [GPU_CHECK_ARGS="--rows 8000"]

1. the `gpu` tests (tests/gpu/: every precision and fusion trains, the on-device skip of a non-finite step,
   device-side image normalisation and log-mel, exact resume on CUDA and a CUDA checkpoint evaluated on a CPU,
   torch.compile, torchrun with NCCL, the out-of-memory message), several at a time on a GPU;
2. scripts/benchmark.py: on CUDA the reference model (ResNet-18 224 px + a 6-layer BERT) on --rows rows: the
   ceiling at bf16 and fp32, compiled and not, cmtrain end to end with the preprocessed cache, the textbook loop,
   the data-wait share, and the ratios against the targets of docs/benchmarks.md, then cmtrain end to end once
   more under torch.profiler (DIR/profile.txt: where the host's and the GPU's time goes); without CUDA the small
   preset, unprofiled.
Writes DIR/gpu-check.json (versions, test counts, every figure, each target met or not), DIR/gpu-check.log (all
output), DIR/gpu-tests.xml and DIR/benchmark.json (rewritten after each measurement, so a benchmark stopped by
its timeout still reports what it measured; `benchmark_complete` says whether it finished). Without CUDA it says so in one line; the tests skip and it exits
0. Runs where the package is installed (.venv) and where it is only on PYTHONPATH (the GPU machine's plain
python3 with Hydra and soundfile from wheels: ../shared/device/README.md): each step is a child of this
interpreter, started in the repository root, with the root on PYTHONPATH. Exit status 1 when a test fails or a
step does not finish.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {  # docs/benchmarks.md: what a GPU run should reach
    "end_to_end / ceiling": (">=", 0.90),
    "end_to_end / textbook": (">=", 30.0),
    "bf16 / fp32 (ceiling)": (">=", 1.8),
    "data_wait_fraction": ("<=", 0.05),
}


class Log:
    """Everything printed goes to the terminal and to DIR/gpu-check.log."""

    def __init__(self, path: Path):
        self.file = path.open("w", encoding="utf-8")

    def say(self, text: str) -> None:
        line = f"[{dt.datetime.now():%H:%M:%S}] {text}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def step(self, name: str, command: list[str], timeout: int) -> int | None:
        """Run `command` in the repository root, its output streamed to both; its exit status, or None when it
        ran past `timeout` seconds. The step runs in a process group of its own, so a timeout also ends what it
        started (torchrun's workers, torch.compile's compile workers) and nothing it left behind keeps the output
        pipe open."""
        self.say(f"{name}: {' '.join(command)}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        reader = threading.Thread(target=self._copy, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the step's leftovers (its own process too, after a timeout)
        proc.wait()
        reader.join(timeout=10)
        if status is None:
            self.say(f"{name}: stopped after {timeout} s")
        return status

    def _copy(self, stream) -> None:
        for line in stream:
            sys.stdout.write(line)
            self.file.write(line)
        self.file.flush()


def test_counts(junit: Path) -> dict:
    """{tests, passed, failed, skipped, failures: [names]} from pytest's JUnit XML."""
    if not junit.is_file():
        return {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    cases = ET.parse(junit).getroot().iter("testcase")
    counts, failures = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}, []
    for case in cases:
        counts["tests"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failures.append(f"{case.get('classname')}::{case.get('name')}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def targets(bench: dict) -> dict:
    """Each target of docs/benchmarks.md with the measured value and whether it is met."""
    values = {**bench.get("ratios", {}), "data_wait_fraction": bench.get("data_wait_fraction")}
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"target": f"{op} {bound}", "measured": value, "met": met}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="report folder ($OUT)")
    parser.add_argument("--rows", type=int, default=None, help="benchmark rows (12000 on CUDA, 192 on a CPU)")
    parser.add_argument("--workers", default="auto", help="benchmark DataLoader workers")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "crossmodal-gpu-check-data"),
                        help="benchmark data folder (outside DIR: only the report belongs there)")
    parser.add_argument("--tests-timeout", type=int, default=330)
    parser.add_argument("--bench-timeout", type=int, default=300)
    opts = parser.parse_args()
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu-check.log")

    import torch

    sys.path.insert(0, str(ROOT))
    from crossmodal_cli.version import version_line

    cuda = torch.cuda.is_available()
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "versions": version_line(), "cuda": cuda,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None}
    log.say(report["versions"])
    if not cuda:
        log.say("no CUDA GPU here: the gpu tests skip and the benchmark measures this CPU at its small preset")

    junit = out / "gpu-tests.xml"
    tests = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
             f"--junitxml={junit}", "tests/gpu"]
    if cuda and importlib.util.find_spec("xdist"):  # several tests at a time: each uses a sliver of the GPU
        tests += ["-n", str(min(6, os.cpu_count() or 1)), "--dist", "load"]
    status = log.step("gpu tests", tests, opts.tests_timeout)
    report["tests"] = {**test_counts(junit), "exit_status": status}

    bench_json = out / "benchmark.json"
    bench = [sys.executable, "scripts/benchmark.py", "--preset", "reference" if cuda else "small",
             "--rows", str(opts.rows or (12000 if cuda else 192)), "--workers", str(opts.workers),
             "--data", str(Path(opts.data).resolve()),
             "--json", str(bench_json), *(["--profile", str(out / "profile.txt")] if cuda else [])]
    bench_status = log.step("benchmark", bench, opts.bench_timeout)
    # the benchmark rewrites its JSON after each measurement: a run stopped midway still reports what it measured
    report["benchmark"] = json.loads(bench_json.read_text()) if bench_json.is_file() else None
    report["benchmark_complete"] = bench_status == 0
    report["benchmark_exit_status"] = bench_status
    if cuda and report["benchmark"]:
        report["targets"] = targets(report["benchmark"])
        for name, target in report["targets"].items():
            measured = "not measured" if target["measured"] is None else f"measured {target['measured']:.3f}"
            verdict = {True: "met", False: "NOT met", None: "unknown"}[target["met"]]
            log.say(f"target {name} {target['target']}: {measured} -> {verdict}")
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    t = report["tests"]
    log.say(f"gpu tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped; benchmark "
            f"{'done' if report['benchmark_complete'] else 'did not finish'}; report: {out / 'gpu-check.json'}")
    good = status in (0, 5) and t["failed"] == 0 and report["benchmark_complete"]  # 5: no test collected
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
