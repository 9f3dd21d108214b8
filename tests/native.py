"""Each installed package with a native library, loaded and used once: a wheel built against another torch (or a
missing system library) shows up as one line naming the package, before any test runs (tests/conftest.py)."""
from __future__ import annotations

import subprocess
import sys

CHECKS = {
    "torch": "import torch; assert (torch.ones(3) + 1).sum().item() == 6",
    "torchaudio": "import torch, torchaudio; "
                  "torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=256, n_mels=16)(torch.randn(1, 800))",
    "torchvision": "import torch, torchvision.ops; "
                   "torchvision.ops.nms(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([1.0]), 0.5)",
    "tokenizers": "from tokenizers import Tokenizer, models; "
                  "assert Tokenizer(models.WordLevel({'a': 0, '[UNK]': 1}, unk_token='[UNK]')).encode('a').ids == [0]",
    "soundfile": "import io, numpy, soundfile; b = io.BytesIO(); "
                 "soundfile.write(b, numpy.zeros(80, 'float32'), 8000, format='FLAC'); b.seek(0); soundfile.read(b)",
    "pillow": "import io; from PIL import Image; b = io.BytesIO(); Image.new('RGB', (4, 4)).save(b, 'JPEG'); "
              "b.seek(0); Image.open(b).load()",
}

RUNNER = """
import sys, traceback
for name, code in CHECKS.items():
    try:
        exec(code, {})
    except BaseException as err:
        print(name + ": " + (str(err).strip().splitlines() or [type(err).__name__])[-1][:300])
        sys.exit(1)
"""


def broken_package() -> str | None:
    """None when every check passes, else 'PACKAGE: the error's last line' for the first that fails (also a crash
    of the interpreter, which is why the checks run in a child process)."""
    proc = subprocess.run([sys.executable, "-c", f"CHECKS = {CHECKS!r}\n{RUNNER}"], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 0:
        return None
    return proc.stdout.strip() or f"the interpreter crashed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
