"""The commands as the CUDA tests start them: `python -m crossmodal_cli.…`, so they also run where the package is on
PYTHONPATH rather than installed (the GPU machine: ../shared/device/README.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "4"}


def command(module: str, *args: str, cwd: Path, env: dict | None = None, prefix: tuple[str, ...] = (),
            timeout: int = 600) -> subprocess.CompletedProcess:
    """`python [prefix] -m crossmodal_cli.MODULE args` in cwd."""
    return subprocess.run([sys.executable, *prefix, "-m", f"crossmodal_cli.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, env=env or ENV, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc
