"""Each fusion strategy learns a task that needs two modalities, through the real `train()`.

The task is made from the demo data: the label is the pair (shape in the image, colour named in the text), nine
classes. Image alone knows the shape and text alone the colour, so a unimodal model can be right at most one time
in three; a fusion that combines them can be right every time. Unlike the demo's own label ((shape + colour)
mod 3), this pair is also learnable by late (decision-level) fusion, which adds unimodal scores, so every strategy
faces the same test. (On the demo label itself, late fusion stays at chance: docs/fusion.md.)
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train
from tests.conftest import write_pairs_csv

STRATEGIES = sorted(p.stem for p in Path(config_dir(), "fusion").glob("*.yaml"))
FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "trainer.max_epochs=5", "trainer.batch_size=16",
        "data.image_size=32"]  # the demo images are 32 px; tiny_cnn alone would declare 224


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    """600 demo rows relabelled with their (shape, colour) pair (tests/conftest.py)."""
    return write_pairs_csv(tmp_path_factory.mktemp("pairs") / "demo", num_samples=600)


def val_accuracy(csv: Path, run_dir: Path, fusion: str, modalities: str) -> float:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", f"fusion={fusion}",
                                          f"modalities=[{modalities}]", *FAST])
    return train(cfg, run_dir)["val"]["accuracy"]


@pytest.fixture(scope="module")
def best_unimodal(pairs_csv, tmp_path_factory) -> float:
    """The better of image alone and text alone (concat over one modality): at most about 1/3."""
    accuracies = [val_accuracy(pairs_csv, tmp_path_factory.mktemp(m), "concat", m) for m in ("image", "text")]
    assert max(accuracies) < 0.45, f"a single modality should not solve the pair task: {accuracies}"
    return max(accuracies)


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_fusion_of_image_and_text_beats_the_best_single_modality(fusion, pairs_csv, best_unimodal, tmp_path):
    accuracy = val_accuracy(pairs_csv, tmp_path, fusion, "image,text")
    assert accuracy >= best_unimodal + 0.3, f"{fusion}: val accuracy {accuracy:.3f}, unimodal {best_unimodal:.3f}"
