"""`cmexport ckpt=PATH out=DIR`: a checkpoint as a bundle that predicts without torch (crossmodal_cli/exporting.py;
load it with `crossmodal_cli.runtime.load_bundle(DIR)` or serve it with `cmserve bundle=DIR`)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from crossmodal_cli.arguments import arguments
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error

USAGE = "usage: cmexport ckpt=PATH.ckpt out=DIR   (a run folder works as ckpt: its checkpoints/best.ckpt)"


def checkpoint_path(value: str) -> Path:
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise CrossmodalError(f"ckpt={value}: no such checkpoint (give a .ckpt file or a run folder with "
                              f"checkpoints/best.ckpt)")
    return path


@exit_on_user_error
def run(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"{USAGE}\n{__doc__}")
        return 0
    values = arguments(argv, {"ckpt": None, "out": None}, USAGE)
    checkpoint, out = checkpoint_path(values["ckpt"]), Path(values["out"]).expanduser()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from crossmodal_cli.exporting import export_bundle

    found = export_bundle(checkpoint, out)
    print(f"bundle written: {out} (model.onnx by the {found['export']['exporter']} exporter, largest difference from "
          f"PyTorch {found['export']['max_abs_difference']:.1e}; card.md says what it predicts and expects)")
    return 0


def main() -> None:
    """Console script `cmexport`."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
