"""`cmtrain --version`: the versions a bug report needs, in one line."""
from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _own_version() -> str:
    """The installed version, or, from a source checkout on PYTHONPATH (not installed), pyproject.toml's."""
    try:
        return metadata.version("crossmodal")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return f"{found[1]} (source checkout, not installed)" if found else "unknown (not installed)"


def version_line() -> str:
    """crossmodal's version and those of Python, torch (its CUDA build and the GPUs it sees), transformers and
    Hydra, e.g. `crossmodal 0.1.0 (Python 3.11.7; torch 2.11.0+cu130, CUDA 13.0, 1 GPU: NVIDIA H200; ...)`."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        gpus = f"CUDA {torch.version.cuda}, {count} GPU{'s' if count > 1 else ''}: {torch.cuda.get_device_name(0)}"
    else:
        gpus = f"CUDA build {torch.version.cuda}, no GPU visible" if torch.version.cuda else "CPU build"
    return (f"crossmodal {_own_version()} (Python {platform.python_version()}; torch {torch.__version__}, "
            f"{gpus}; torchvision {_version('torchvision')}; torchaudio {_version('torchaudio')}; "
            f"transformers {_version('transformers')}; hydra-core {_version('hydra-core')})")
