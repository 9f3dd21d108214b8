"""The environment `make install` builds is the one requirements.lock describes, and its native libraries load."""
from __future__ import annotations

import re
import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from native import CHECKS, broken_package

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked() -> dict[str, str]:
    """{name: version} of the lock's lines whose environment marker holds here."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_the_lock_pins_torch_torchvision_and_torchaudio_as_one_matched_triple():
    pins = locked()
    assert (pins["torch"], pins["torchvision"], pins["torchaudio"]) == ("2.11.0", "0.26.0", "2.11.0")
    project = (ROOT / "pyproject.toml").read_text()
    for name, version in (("torch", "2.11.0"), ("torchvision", "0.26.0"), ("torchaudio", "2.11.0")):
        assert f'"{name}=={version}"' in project, f"pyproject.toml must pin {name}=={version} like the lock"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs in the .venv that `make install` builds from the lock")
def test_every_installed_version_is_the_locked_one():
    pins = locked()
    wrong = {name: (version, metadata.version(name)) for name, version in pins.items()
             if metadata.version(name) != version}
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}"
    # the .venv's own site-packages: sys.path can also hold setuptools' vendored copies once it is imported
    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions(path=site.getsitepackages())}
    extra = installed - set(pins) - {"crossmodal", "pip"}
    assert not extra, f"installed but not in requirements.lock: {sorted(extra)}"


def test_every_native_extension_loads():
    assert broken_package() is None
    assert {"torch", "torchaudio", "torchvision", "tokenizers", "soundfile", "pillow"} <= set(CHECKS)


def test_a_native_extension_that_does_not_load_is_named(monkeypatch):
    import native

    monkeypatch.setitem(native.CHECKS, "torchaudio", "raise OSError('libtorchaudio.so: undefined symbol: x')")
    assert native.broken_package() == "torchaudio: libtorchaudio.so: undefined symbol: x"


def test_cmtrain_version_names_crossmodal_torch_cuda_transformers_and_hydra():
    proc = subprocess.run([sys.executable, "-m", "crossmodal_cli.train", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line
    assert re.match(r"crossmodal \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+; torch 2\.11\.0", line), line
    for part in (f"torch {metadata.version('torch')}", f"transformers {metadata.version('transformers')}",
                 f"hydra-core {metadata.version('hydra-core')}"):
        assert part in line, line
    assert "GPU" in line or "CPU build" in line
