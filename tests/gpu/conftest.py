"""The CUDA tests (marker `gpu`): skipped, with the reason, where no CUDA GPU is visible; `make gpu-check` runs
them on a GPU machine."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check on a GPU machine)"))
