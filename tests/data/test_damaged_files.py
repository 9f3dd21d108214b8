"""Damaged files: a PNG whose IDAT is damaged behind valid CRCs, a JPEG whose scan is damaged, a FLAC truncated or
with garbled frames, and a WAV whose body is shorter than its data chunk. Each header reads, so only decoding finds
the damage: the check before training refuses the file (on_missing=error: one line; drop / zero: the row is dropped
or masked and counted), the plain loader, the preprocessed cache and cmpredict raise, and no path turns it into
zeros or a shorter clip."""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from PIL import Image, ImageFile

from tests.conftest import write_dataset
from crossmodal_cli.data.dataset import AudioSettings, TableDataset
from crossmodal_cli.data.decoding import upright
from crossmodal_cli.data.modalities import load_audio, load_image
from crossmodal_cli.data.preprocessed import cached_images
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.data.validation import PROBES, check_inputs
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.paths import config_dir
from crossmodal_cli.predict import predict
from crossmodal_cli.train import train

from console import console

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def noise() -> np.random.Generator:
    """The same noise for every fixture file, so each is damaged the same way in every run."""
    return np.random.default_rng(7)


def damaged_png(path: Path) -> Path:
    """A noisy PNG with 16 bytes in the middle of its IDAT data inverted and the chunk's CRC recomputed: verify()
    passes, decoding fails."""
    Image.fromarray(noise().integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    pos = 8
    while data[pos + 4:pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    length = struct.unpack(">I", data[pos:pos + 4])[0]
    middle = pos + 8 + length // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    data[pos + 8 + length:pos + 12 + length] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:pos + 8 + length])))
    path.write_bytes(bytes(data))
    with Image.open(path) as img:
        img.verify()  # every chunk's CRC is intact
    with pytest.raises(OSError), Image.open(path) as img:
        img.load()  # but the pixel data does not decode
    return path


def damaged_jpeg(path: Path) -> Path:
    """A noisy JPEG whose entropy-coded data has a span overwritten with SOI markers (libjpeg: 'two SOI markers',
    an error, not a warning), same length, so nothing looks truncated."""
    Image.fromarray(noise().integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + struct.unpack(">H", data[sos + 2:sos + 4])[0]
    middle = (scan + len(data) - 2) // 2
    data[middle:middle + 16] = b"\xff\xd8" * 8
    path.write_bytes(bytes(data))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for draft in (None, (8, 8)):  # in full and at 1/8 scale (what the check decodes)
        with pytest.raises(OSError), Image.open(path) as img:
            if draft:
                img.draft("RGB", draft)
            img.load()
    return path


def truncated_flac(path: Path) -> Path:
    """A FLAC cut in the middle of its frames: the header still declares every frame; reading them fails."""
    sf.write(path, noise().normal(0, 0.1, 8000).astype("float32"), 8000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert sf.info(str(path)).frames == 8000
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))
    return path


def corrupted_flac(path: Path) -> Path:
    """A FLAC with 64 bytes in the middle of its frames garbled, its length and header intact: reading fails."""
    sf.write(path, noise().normal(0, 0.1, 8000).astype("float32"), 8000, format="FLAC")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 8000
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))
    return path


def truncated_wav(path: Path) -> Path:
    """A WAV whose body ends halfway through its data chunk: libsndfile reads the frames that are there, without
    an error, so only the data chunk's declared size shows the loss."""
    sf.write(path, noise().normal(0, 0.1, 8000).astype("float32"), 8000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    frames, _ = sf.read(str(path))
    assert 0 < len(frames) < 8000  # a silent short read
    return path


DAMAGED = {"png": ("image", "png", damaged_png), "jpg": ("image", "jpg", damaged_jpeg),
           "flac": ("audio", "flac", truncated_flac), "flac-frames": ("audio", "flac", corrupted_flac),
           "wav": ("audio", "wav", truncated_wav)}
REASONS = {"png": "cannot decode image (damaged PNG: its pixel data does not inflate",
           "jpg": "cannot decode image (OSError: ", "flac": "cannot decode audio (LibsndfileError: ",
           "flac-frames": "cannot decode audio (LibsndfileError: ",
           "wav": "audio file truncated: its data chunk declares"}


def damage_row(csv: Path, kind: str, row: int) -> Path:
    """Point row `row` (CSV line row + 2) of a write_dataset CSV at a damaged file of `kind`; returns the file."""
    modality, suffix, make = DAMAGED[kind]
    folder = "img" if modality == "image" else "wav"
    path = make(csv.parent / folder / f"damaged.{suffix}")
    frame = pd.read_csv(csv)
    frame.loc[row, COLUMNS[modality]] = f"{folder}/damaged.{suffix}"
    frame.to_csv(csv, index=False)
    return path


def table_for(csv: Path, modalities=None):
    return read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=modalities, val_fraction=0.25,
                         test_fraction=0.25, seed=0)


@pytest.mark.parametrize("kind", DAMAGED)
def test_the_plain_loader_raises_instead_of_returning_zeros(tmp_path, kind):
    modality, suffix, make = DAMAGED[kind]
    path = make(tmp_path / f"bad.{suffix}")
    with pytest.raises(CrossmodalError, match=re.escape(f"{path}: cannot read {modality} (")) as err:
        load_image(str(path), 32) if modality == "image" else load_audio(str(path), 8000, 1.0)
    assert "\n" not in str(err.value)


def test_upright_lets_a_pixel_error_through(tmp_path):
    """The EXIF step loads the pixels outside its `try`: the decode error is not taken for a bad EXIF block (a
    second load would return the zeroed buffer)."""
    path = damaged_png(tmp_path / "bad.png")
    with Image.open(path) as img, pytest.raises(OSError, match="data stream"):
        upright(img)


@pytest.mark.parametrize("kind", DAMAGED)
def test_the_check_refuses_the_file_like_the_loader(tmp_path, kind):
    modality, suffix, make = DAMAGED[kind]
    reason, _ = PROBES[modality](str(make(tmp_path / f"bad.{suffix}")))
    assert reason is not None and reason.startswith(REASONS[kind]), reason


def test_intact_audio_of_every_kind_passes_and_loads_in_full(tmp_path):
    """No false alarm: formats whose header count the check compares, and a WAV written to a pipe (sizes unknown)."""
    wave = noise().normal(0, 0.1, (6000, 2)).astype("float32")
    for name, kw in (("a.wav", {"subtype": "PCM_16"}), ("f.wav", {"subtype": "FLOAT"}), ("a.aiff", {}),
                     ("a.flac", {}), ("a.ogg", {"subtype": "VORBIS"}), ("a.mp3", {})):
        sf.write(tmp_path / name, wave, 8000, **kw)
    streamed = bytearray((tmp_path / "a.wav").read_bytes())
    data = streamed.index(b"data")
    streamed[4:8] = streamed[data + 4:data + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "pipe.wav").write_bytes(bytes(streamed))
    for path in sorted(tmp_path.iterdir()):
        assert PROBES["audio"](str(path)) == (None, False), path.name
        assert load_audio(str(path), 8000, 1.0)[:6000].abs().max() > 0.05, path.name
    assert load_audio(str(tmp_path / "pipe.wav"), 8000, 1.0).shape == (8000,)
    cut = (tmp_path / "a.aiff").read_bytes()
    (tmp_path / "cut.aiff").write_bytes(cut[:len(cut) // 2])
    reason, _ = PROBES["audio"](str(tmp_path / "cut.aiff"))
    assert reason.startswith("audio file truncated: its SSND chunk declares"), reason


@pytest.mark.parametrize("kind", DAMAGED)
def test_on_missing_error_stops_with_one_line_naming_file_and_line(tmp_path, kind):
    csv = write_dataset(tmp_path / "ds", n=12)
    modality = DAMAGED[kind][0]
    path = damage_row(csv, kind, 4)
    with pytest.raises(CrossmodalError) as err:
        check_inputs(table_for(csv), COLUMNS, "error")
    message = str(err.value)
    assert message.startswith(f"{csv.resolve()}: column '{COLUMNS[modality]}': 1 row (line 6) with unusable "
                              f"{modality} input, e.g. line 6: {path.resolve()}: {REASONS[kind]}"), message
    assert message.endswith("(fix the rows, or set data.on_missing=drop or zero)") and "\n" not in message


@pytest.mark.parametrize("kind", DAMAGED)
def test_drop_and_zero_leave_the_row_out_and_count_it(tmp_path, kind, caplog):
    csv = write_dataset(tmp_path / "ds", n=12)
    modality = DAMAGED[kind][0]
    damage_row(csv, kind, 4)
    table = table_for(csv)
    with caplog.at_level(logging.WARNING, logger="crossmodal_cli.data.validation"):
        report = check_inputs(table, COLUMNS, "drop")
    assert sum(r.get(modality, 0) for r in report.values()) == 1
    assert sum(len(f) for f in table.splits.values()) == 11
    assert 6 not in pd.concat(table.splits.values())["line"].tolist()
    assert any(f"'{modality}': 1" in r.getMessage() and "data.on_missing=drop" in r.getMessage()
               for r in caplog.records)
    table = table_for(csv)
    report = check_inputs(table, COLUMNS, "zero")
    rows = pd.concat(table.splits.values())
    assert sum(r.get(modality, 0) for r in report.values()) == 1 and len(rows) == 12
    assert rows.loc[~rows[f"has_{modality}"], "line"].tolist() == [6]


def test_a_damaged_file_is_never_cached_as_passed(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=12)
    damage_row(csv, "png", 4)
    cache = tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(CrossmodalError, match="line 6"):
            check_inputs(table_for(csv), COLUMNS, "error", cache_dir=str(cache))
    (cache_file,) = cache.iterdir()
    passed = json.loads(cache_file.read_text())["entries"]
    assert sum(key.startswith("image:") for key in passed) == 11  # the good images only
    assert not [key for key in passed if key.endswith("damaged.png")]


@pytest.mark.parametrize("kind", ["png", "wav"])
def test_a_file_damaged_after_the_check_fails_at_load_time_with_its_line(tmp_path, kind):
    """Damaged in place after it passed (size and mtime kept, so the validation cache still holds it): the loader
    stops with one line naming the CSV line and the on_missing choices."""
    csv = write_dataset(tmp_path / "ds", n=12)
    modality, suffix, make = DAMAGED[kind]
    cache = str(tmp_path / "cache")
    check_inputs(table_for(csv), COLUMNS, "error", cache_dir=cache)
    target = csv.parent / ("img/4.png" if modality == "image" else "wav/4.wav")
    before = target.stat()
    damaged = make(tmp_path / f"bad.{suffix}").read_bytes()
    target.write_bytes(damaged[:before.st_size].ljust(before.st_size, b"\0"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    table = table_for(csv)
    check_inputs(table, COLUMNS, "error", cache_dir=cache)  # a cache hit: not decoded again
    frame = pd.concat(table.splits.values(), ignore_index=True)
    row = frame.index[frame["line"] == 6][0]
    dataset = TableDataset(frame, [modality, "text"], 16, AudioSettings(8000, 0.5), train=False, augment=False,
                           seed=0)
    with pytest.raises(CrossmodalError) as err:
        dataset[(0, int(row))]
    message = str(err.value)
    assert message.startswith(f"{csv.resolve()}: line 6: {target.resolve()}: cannot read {modality} (")
    assert "data.on_missing=drop or zero" in message and "data.validation_cache=null" in message
    assert "\n" not in message


def test_the_preprocessed_cache_refuses_a_damaged_image_and_keeps_nothing(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), "red").save(good)
    bad = damaged_png(tmp_path / "bad.png")
    paths = [str(good), str(bad)]
    with pytest.raises(CrossmodalError, match=re.escape(f"{bad}: cannot read image (OSError: ")):
        cached_images(paths, np.ones(2, bool), 16, "squash", tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")]
    images, positions = cached_images(paths, np.array([True, False]), 16, "squash", tmp_path / "cache")
    assert positions.tolist() == [0, -1] and len(images) == 1  # masked (on_missing=zero): never decoded


def train_config(csv: Path, modalities: str, *extra: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["data=csv", f"data.csv={csv}", f"modalities={modalities}",
                                           "data.image_size=16", "data.audio.sample_rate=8000",
                                           "data.audio.seconds=0.5", "trainer.max_epochs=1", "trainer.batch_size=4",
                                           "trainer.num_workers=0", "trainer.progress_bar=false", *extra])


@pytest.mark.filterwarnings("ignore:No (positive|negative) samples:UserWarning")  # torchmetrics, on 2-row splits
@pytest.mark.parametrize("kind, on_missing", [("png", "drop"), ("jpg", "zero"), ("wav", "zero"), ("flac", "drop")])
def test_training_drops_or_masks_the_row_and_reports_it(tmp_path, kind, on_missing):
    csv = write_dataset(tmp_path / "ds", n=12)
    modality = DAMAGED[kind][0]
    damage_row(csv, kind, 4)
    extra = ["data.cache=preprocessed", f"data.cache_dir={tmp_path / 'pre'}"] if modality == "image" else []
    with pytest.raises(CrossmodalError, match=r"\(line 6\) with unusable"):
        train(train_config(csv, f"[{modality},text]", *extra), tmp_path / "refused")
    assert not (tmp_path / "pre").exists()  # refused before anything was decoded into the cache
    train(train_config(csv, f"[{modality},text]", f"data.on_missing={on_missing}", *extra), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["on_missing"] == on_missing
    assert sum(counts.get(modality, 0) for counts in report["unusable_inputs"].values()) == 1
    assert sum(report["rows"].values()) == (11 if on_missing == "drop" else 12)
    if modality == "image":  # the splits' cache entries hold the 11 good images: the damaged one was never decoded
        entries = [p for p in (tmp_path / "pre" / "images").iterdir() if not p.name.startswith(".")]
        assert sum(len(json.loads((entry / "index.json").read_text())) for entry in entries) == 11


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny image + text classifier (one epoch on 12 rows)."""
    folder = tmp_path_factory.mktemp("damaged-predict")
    csv = write_dataset(folder / "train", n=12)
    train(train_config(csv, "[image,text]"), folder / "run")
    return folder / "run" / "checkpoints" / "best.ckpt"


def new_csv_with_a_damaged_image(folder: Path) -> tuple[Path, Path]:
    csv = write_dataset(folder, n=6, seed=1)
    return csv, damage_row(csv, "png", 2)


def test_cmpredict_refuses_a_damaged_image_with_one_line(checkpoint, tmp_path):
    csv, bad = new_csv_with_a_damaged_image(tmp_path / "new")
    proc = subprocess.run([*console("cmpredict"), f"ckpt={checkpoint}", f"data.csv={csv}", "hydra.run.dir=out",
                           "trainer.num_workers=0"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: {csv.resolve()}: column 'image_path': 1 row (line 4) with unusable image "
                               f"input, e.g. line 4: {bad.resolve()}: {REASONS['png']}")


@pytest.mark.parametrize("on_missing", ["drop", "zero"])
def test_cmpredict_drops_or_masks_a_damaged_image_and_counts_it(checkpoint, tmp_path, on_missing, caplog):
    csv, _ = new_csv_with_a_damaged_image(tmp_path / "new")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=[f"ckpt={checkpoint}", f"data.csv={csv}", f"data.on_missing={on_missing}",
                                            "trainer.num_workers=0"])
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.WARNING, logger="crossmodal_cli.data.validation"):
        predictions = predict(cfg, tmp_path / "out")
    assert any("{'image': 1}" in r.getMessage() and f"data.on_missing={on_missing}" in r.getMessage()
               for r in caplog.records)
    expected = [2, 3, 5, 6, 7] if on_missing == "drop" else [2, 3, 4, 5, 6, 7]
    assert sorted(predictions["line"].tolist()) == expected
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["line"].tolist() == predictions["line"].tolist()
