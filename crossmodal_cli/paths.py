"""Where the configs are: inside the installed package (wheel) or beside it (source checkout, editable install)."""
from __future__ import annotations

from pathlib import Path


def config_dir() -> str:
    """Absolute path of the folder holding train.yaml, so console scripts work from any working directory."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"crossmodal configs not found next to {here}; reinstall the package")
