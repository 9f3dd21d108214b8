"""How the tests start the commands: the console script installed beside this Python (the .venv's `cmtrain`,
`cmeval`, `cmpredict`, `cmsweep`), or, where the package is only on PYTHONPATH and no script is installed (the GPU
machine: ../shared/device/README.md), `python -m` its module, so the whole suite runs there too."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

MODULES = {"cmtrain": "crossmodal_cli.train", "cmeval": "crossmodal_cli.evaluate",
           "cmpredict": "crossmodal_cli.predict", "cmsweep": "crossmodal_cli.sweep"}


def console(name: str) -> list[str]:
    """The argv prefix that runs console script `name`."""
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", MODULES[name]]
