"""data.cache=preprocessed: images decoded once into a memory-mapped array, texts tokenised once, whole batches
fetched at once; the same batches as the plain path, a cache that follows the files, safe under concurrent jobs."""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from crossmodal_cli.data.colours import write_colours
from crossmodal_cli.data.dataset import AudioSettings, Collate, TableDataset, make_loader, tokenize_all
from crossmodal_cli.data.modalities import load_image, train_wordpiece
from crossmodal_cli.data.preprocessed import cached_images
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def split(csv: Path, modalities=("image", "text")):
    return read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=list(modalities),
                         val_fraction=0.25, test_fraction=0.25, seed=0).splits["train"]


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "images").iterdir() if not p.name.startswith("."))


def test_cached_images_are_the_decoded_images_and_follow_the_files(dataset_csv, tmp_path):
    frame = split(dataset_csv)
    paths, present = frame["image"].tolist(), np.ones(len(frame), bool)
    present[1] = False
    images, positions = cached_images(paths, present, 16, "squash", tmp_path / "cache")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 16, 16) and positions[1] == -1
    for i in (0, 2):
        assert torch.equal(torch.from_numpy(np.array(images[positions[i]])), load_image(paths[i], 16, "squash"))
    first = entries(tmp_path / "cache")
    cached_images(paths, present, 16, "squash", tmp_path / "cache")                   # reused
    assert entries(tmp_path / "cache") == first
    cached_images(paths, present, 24, "squash", tmp_path / "cache")                   # another size: another entry
    cached_images(paths, present, 16, "shorter_side_center_crop", tmp_path / "cache")  # another resize mode
    assert len(entries(tmp_path / "cache")) == 3
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(paths[0])                 # a changed file
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    images, positions = cached_images(paths, present, 16, "squash", tmp_path / "cache")
    assert len(entries(tmp_path / "cache")) == 4 and int(images[positions[0]].max()) == 7


def _build(args):
    paths, cache = args
    images, positions = cached_images(paths, np.ones(len(paths), bool), 16, "squash", cache)
    return str(Path(images.filename).parent), images.sum()


def test_concurrent_jobs_build_one_entry(tmp_path):
    from crossmodal_cli.data.dataset import _worker_context

    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(40):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    with _worker_context().Pool(3) as pool:
        results = pool.map(_build, [(paths, tmp_path / "cache")] * 3)
    assert len({r[0] for r in results}) == 1 and len({int(r[1]) for r in results}) == 1
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 2  # the entry and its lock file, no leftovers


def test_whole_batches_equal_the_item_by_item_batches(dataset_csv, tmp_path):
    frame = split(dataset_csv)
    tokenizer = train_wordpiece(frame["text"].tolist(), vocab_size=60, lowercase=True)
    audio = AudioSettings(8000, 0.25)
    images = cached_images(frame["image"].tolist(), np.ones(len(frame), bool), 16, "squash", tmp_path / "cache")
    tokens = tokenize_all(tokenizer, frame["text"].tolist(), max_length=8)
    plain = TableDataset(frame, ["image", "text"], 16, audio, train=True, augment=False, seed=1)
    fast = TableDataset(frame, ["image", "text"], 16, audio, train=True, augment=False, seed=1, images=images,
                        tokens=tokens)
    assert fast.whole_batches and not plain.whole_batches
    keys = [(1, 3), (1, 0), (1, 2)]
    expected = Collate(tokenizer, 8)(plain.__getitems__(keys))
    got = Collate(tokenizer, 8)(fast.__getitems__(keys))
    assert torch.equal(got["inputs"]["image"], expected["inputs"]["image"])
    assert torch.equal(got["inputs"]["text"]["input_ids"][:, :expected["inputs"]["text"]["input_ids"].shape[1]],
                       expected["inputs"]["text"]["input_ids"])
    assert got["inputs"]["text"]["input_ids"].shape[1] == tokens["input_ids"].shape[1]  # one length for all batches
    assert torch.equal(got["index"], torch.tensor([3, 0, 2])) and torch.equal(got["target"], expected["target"])
    # through a DataLoader with a worker: the same batches
    loader = make_loader(fast, Collate(tokenizer, 8), batch_size=2, shuffle=True, num_workers=1, seed=0,
                         pin_memory=False)
    loader.sampler.set_epoch(1)
    rows = torch.cat([b["index"] for b in loader])
    assert sorted(rows.tolist()) == list(range(len(frame)))
    augmented = TableDataset(frame, ["image", "text"], 16, audio, train=True, augment=True, seed=1, images=images,
                             tokens=tokens)
    assert not augmented.whole_batches  # augmentation stays per row (seeded by seed, epoch and row)


def test_training_with_the_cache_matches_the_plain_path(tmp_path):
    csv = write_colours(tmp_path / "colours", n=120)
    results = {}
    for name, extra in (("plain", []), ("cached", ["data.cache=preprocessed", f"data.cache_dir={tmp_path / 'c'}"])):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", "trainer.num_workers=0",
                                              "trainer.progress_bar=false", "trainer.batch_size=16",
                                              "data.image_size=32", "trainer.max_epochs=2",
                                              "modalities=[image,text]", *extra])
        results[name] = train(cfg, tmp_path / name)
    assert entries(tmp_path / "c")
    for key in ("accuracy", "f1_macro"):
        assert results["cached"]["val"][key] == pytest.approx(results["plain"]["val"][key], abs=1e-6)
    assert results["cached"]["val"]["loss"] == pytest.approx(results["plain"]["val"]["loss"], rel=1e-3)


def test_an_unwritable_cache_folder_is_one_line(dataset_csv, tmp_path):
    from crossmodal_cli.errors import CrossmodalError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    frame = split(dataset_csv)
    with pytest.raises(CrossmodalError, match=r"data.cache_dir=.*a-file/cache: cannot write the preprocessed images"):
        cached_images(frame["image"].tolist(), np.ones(len(frame), bool), 16, "squash", blocker / "cache")
