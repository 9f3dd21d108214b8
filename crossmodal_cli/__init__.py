"""crossmodal: train and evaluate image + text + audio models from a CSV, from the command line (cmtrain, cmeval,
cmpredict, cmsweep) or from Python:

    from crossmodal_cli import fit, load

`fit` and `load` (crossmodal_cli/api.py) are imported on first use, so `import crossmodal_cli` stays cheap (no
torch until a model is built).
"""
from __future__ import annotations

from typing import Any

__all__ = ["fit", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crossmodal_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'crossmodal_cli' has no attribute {name!r}")
