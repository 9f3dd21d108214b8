"""In-memory image and audio cells of a DataFrame (encoded bytes, PIL images): decoded to the very tensors the same
file gives, checked like files (a damaged one follows data.on_missing), keyed by content in the caches, never
taken from the validation cache, and carried to DataLoader workers."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from crossmodal_cli.data.cachefiles import input_identity
from crossmodal_cli.data.dataset import AudioSettings, TableDataset, make_loader
from crossmodal_cli.data.modalities import load_audio, load_image
from crossmodal_cli.data.preprocessed import cached_images
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image", "text": "text", "audio": "audio", "label": "label", "split": "split"}
AUDIO = AudioSettings(8000, 0.25)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Tiny files of several kinds: PNGs (RGB; palette with transparency, turned by EXIF), a JPEG large enough to
    be drafted (turned by EXIF), WAV and FLAC."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    out = {name: tmp_path / name for name in ("rgb.png", "palette.png", "big.jpg", "a.wav", "b.flac")}
    Image.fromarray(pixels).save(out["rgb.png"])
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(out["palette.png"], transparency=3, exif=exif(6))
    Image.fromarray(np.kron(pixels, np.ones((10, 10, 1), np.uint8))).save(out["big.jpg"], quality=90, exif=exif(3))
    sf.write(out["a.wav"], rng.normal(0, 0.1, 1500).astype("float32"), 8000)
    sf.write(out["b.flac"], rng.normal(0, 0.1, 3000).astype("float32"), 16000)
    return out


def frame_of(images: list, audios: list) -> pd.DataFrame:
    n = len(images)
    return pd.DataFrame({"image": images, "audio": audios, "text": [f"row {i}" for i in range(n)],
                         "label": ["a", "b"] * (n // 2) + ["a"] * (n % 2)})


def table_of(frame: pd.DataFrame, on_missing: str = "error", cache_dir: str | None = None):
    table = read_labelled(Classification(), frames={"csv": frame}, columns=COLUMNS, modalities=None, val_fraction=0,
                          test_fraction=0, seed=0, keep=["train"], on_missing=on_missing)
    table.report = check_inputs(table, COLUMNS, on_missing, workers=2, cache_dir=cache_dir)
    return table


def dataset_of(table) -> TableDataset:
    return TableDataset(table.splits["train"], table.modalities, 16, AUDIO, train=False, augment=False, seed=0)


def test_bytes_and_pil_cells_decode_to_the_same_tensors_as_their_files(files):
    images = [files["rgb.png"], files["palette.png"], files["big.jpg"], files["rgb.png"], files["palette.png"]]
    audios = [files["a.wav"], files["b.flac"], files["a.wav"], files["b.flac"], files["a.wav"]]
    from_files = dataset_of(table_of(frame_of([str(p) for p in images], [str(p) for p in audios])))
    cells = [p.read_bytes() for p in images[:3]] + [Image.open(images[3]), Image.open(images[4])]
    from_memory = dataset_of(table_of(frame_of(cells, [p.read_bytes() for p in audios])))
    for i in range(len(images)):
        a, b = from_files[(0, i)], from_memory[(0, i)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["audio"], b["audio"]), i
    assert not torch.equal(from_files[(0, 0)]["image"], from_files[(0, 2)]["image"])
    for resize in ("squash", "shorter_side_center_crop"):
        for path in images[:3]:
            assert torch.equal(load_image(path.read_bytes(), 24, resize), load_image(str(path), 24, resize))
    assert torch.equal(load_image(Image.open(files["palette.png"]), 24), load_image(str(files["palette.png"]), 24))
    assert torch.equal(load_audio(files["b.flac"].read_bytes(), 8000, 0.5), load_audio(str(files["b.flac"]), 8000, 0.5))


def damaged_png(data: bytes) -> bytes:
    """The PNG with one byte of its pixel data changed, the chunk's CRC kept: only the CRC check finds it."""
    at = data.index(b"IDAT") + 20
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[:len(data) // 2], "cannot decode image"),
    (damaged_png, r"damaged PNG: its IDAT chunk fails its CRC"),
    (lambda data: b"not an image", "cannot decode image"),
    (lambda data: b"", "empty bytes"),
])
def test_a_damaged_bytes_cell_follows_on_missing(files, damage, reason):
    good = files["rgb.png"].read_bytes()
    images = [good, good, good, damage(good), good, Image.open(files["rgb.png"])]
    frame = frame_of(images, [files["a.wav"].read_bytes()] * 6)
    with pytest.raises(CrossmodalError) as err:
        table_of(frame)
    message = str(err.value)
    assert message.startswith("DataFrame: column 'image': 1 row (DataFrame row 3) with unusable image input, e.g. "
                              "DataFrame row 3: <") and "\n" not in message
    assert re.search(reason, message), message
    dropped = table_of(frame, "drop")
    assert dropped.splits["train"]["line"].tolist() == [2, 3, 4, 6, 7] and dropped.report == {"train": {"image": 1}}
    zeroed = table_of(frame, "zero")
    rows = zeroed.splits["train"]
    assert rows["has_image"].tolist() == [True, True, True, False, True, True]
    assert dataset_of(zeroed)[(0, 3)]["image"].sum() == 0


def test_damaged_audio_bytes_and_an_image_in_the_audio_column_are_unusable(files):
    wav = files["a.wav"].read_bytes()
    frame = frame_of([files["rgb.png"].read_bytes()] * 4, [wav, wav[:-400], Image.open(files["rgb.png"]), wav])
    with pytest.raises(CrossmodalError, match=r"^DataFrame: column 'audio': 2 rows \(DataFrame rows 1, 2\) with "
                                              r"unusable audio input, e.g. DataFrame row 1: <[\d,]+ bytes>: audio file "
                                              r"truncated"):
        table_of(frame)
    assert table_of(frame, "drop").report == {"train": {"audio": 2}}


def test_in_memory_cells_are_never_taken_from_the_validation_cache(files, tmp_path):
    good = files["rgb.png"].read_bytes()
    cache = tmp_path / "cache"
    table_of(frame_of([good, str(files["rgb.png"])], [str(files["a.wav"])] * 2), cache_dir=str(cache))
    stored = [key for f in cache.glob("*.json") for key in json.loads(f.read_text())["entries"]]
    assert sorted(stored) == sorted([f"image:{files['rgb.png']}", f"audio:{files['a.wav']}"])
    with pytest.raises(CrossmodalError, match="DataFrame row 0"):
        table_of(frame_of([damaged_png(good), str(files["rgb.png"])], [str(files["a.wav"])] * 2), cache_dir=str(cache))


def test_caches_key_in_memory_cells_by_their_content(files, tmp_path):
    data = files["rgb.png"].read_bytes()
    assert input_identity("image", data) == input_identity("image", bytes(bytearray(data)))
    assert input_identity("image", data) != input_identity("image", files["palette.png"].read_bytes())
    pixels = np.asarray(Image.open(files["rgb.png"]))
    turned, upright = Image.fromarray(pixels), Image.fromarray(pixels)
    turned.info["exif"] = exif(6).tobytes()
    assert input_identity("image", upright) == input_identity("image", Image.fromarray(pixels.copy()))
    assert input_identity("image", turned) != input_identity("image", upright)
    assert input_identity("image", Image.fromarray(pixels[::-1].copy())) != input_identity("image", upright)
    cells = [data, bytes(bytearray(data)), Image.open(files["palette.png"]), files["big.jpg"].read_bytes(), turned]
    images, positions = cached_images(cells, np.ones(len(cells), bool), 16, "squash", tmp_path / "cache")
    assert positions[0] == positions[1] and len(set(positions.tolist())) == 4
    for cell, position in zip(cells, positions):
        assert np.array_equal(images[position], load_image(cell, 16).numpy())
    again, _ = cached_images(cells, np.ones(len(cells), bool), 16, "squash", tmp_path / "cache")
    assert Path(again.filename) == Path(images.filename)  # the same entry, reused


def stack_images(items: list[dict]) -> torch.Tensor:
    return torch.stack([item["image"] for item in items])


def test_workers_get_in_memory_cells(files):
    images = [files["rgb.png"].read_bytes(), Image.open(files["palette.png"]), files["big.jpg"].read_bytes()] * 2
    ds = dataset_of(table_of(frame_of(images, [files["b.flac"].read_bytes()] * 6)))
    copy = pickle.loads(pickle.dumps(ds))
    assert all(torch.equal(copy[(0, i)]["image"], ds[(0, i)]["image"]) for i in range(6))
    batches = []
    for workers in (0, 1):
        loader = make_loader(ds, stack_images, batch_size=3, shuffle=False, num_workers=workers, seed=0,
                             pin_memory=False)
        batches.append(list(loader))
    assert len(batches[1]) == 2 and all(torch.equal(a, b) for a, b in zip(*batches))


def test_a_cell_that_fails_to_load_names_its_dataframe_row(files):
    rows = pd.DataFrame({"image": [b"not an image"], "target": [0], "source": ["val DataFrame"], "line": [9]})
    ds = TableDataset(rows, ["image"], 16, AUDIO, train=False, augment=False, seed=0)
    with pytest.raises(CrossmodalError, match=r"^val DataFrame: DataFrame row 7: <12 bytes>: cannot read image \("):
        ds[(0, 0)]
