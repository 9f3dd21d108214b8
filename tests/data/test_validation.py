"""File checks before training: missing, not a file, undecodable, outside the data root; the check cache."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import write_dataset
from crossmodal_cli.pipeline.data import load_data
from crossmodal_cli.settings import from_values
from crossmodal_cli.settings.run import DataSettings
from crossmodal_cli.data import validation
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def data_settings(data):
    """The data group of a config, as the typed settings load_data reads."""
    return from_values(DataSettings, OmegaConf.to_container(data, resolve=True))


def table_for(csv):
    return read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25,
                         test_fraction=0.25, seed=0)


def test_good_files_pass(dataset_csv):
    check_inputs(table_for(dataset_csv), COLUMNS, "error")


def test_missing_images_are_counted_and_the_first_lines_named(dataset_csv):
    for i in (3, 5):
        (dataset_csv.parent / "img" / f"{i}.png").unlink()
    with pytest.raises(CrossmodalError) as err:
        check_inputs(table_for(dataset_csv), COLUMNS, "error")
    message = str(err.value)
    assert message.startswith(f"{dataset_csv.resolve()}: column 'image_path': 2 rows (lines 5, 7)")
    assert "file not found" in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"this is not a png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"])
def test_undecodable_image(dataset_csv, content):
    (dataset_csv.parent / "img" / "4.png").write_bytes(content)
    with pytest.raises(CrossmodalError, match=r"lines? 6\).*cannot decode image"):
        check_inputs(table_for(dataset_csv), COLUMNS, "error")


def test_undecodable_audio_and_directory_instead_of_file(dataset_csv):
    (dataset_csv.parent / "wav" / "2.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(CrossmodalError, match=r"column 'audio_path'.*line 4.*cannot decode audio"):
        check_inputs(table_for(dataset_csv), COLUMNS, "error")
    frame = pd.read_csv(dataset_csv)
    frame.loc[0, "image_path"] = "img"
    frame.to_csv(dataset_csv, index=False)
    with pytest.raises(CrossmodalError, match="not a regular file"):
        check_inputs(table_for(dataset_csv), COLUMNS, "error")


def test_blank_path_is_reported(dataset_csv):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)
    frame.loc[1, "audio_path"] = ""
    frame.to_csv(dataset_csv, index=False)
    with pytest.raises(CrossmodalError, match=r"line 3: \(blank\): blank path"):
        check_inputs(table_for(dataset_csv), COLUMNS, "error")


def truncated_copy(source, target):
    data = source.read_bytes()
    target.write_bytes(data[:len(data) // 2])


def test_truncated_png_and_jpeg_and_text_named_png_are_caught(tmp_path):
    csv = write_dataset(tmp_path, n=12)
    img = tmp_path / "img"
    Image.open(img / "0.png").resize((200, 160)).save(img / "big.jpg", quality=90)
    Image.open(img / "0.png").resize((200, 160)).save(img / "big.png")
    truncated_copy(img / "big.jpg", img / "1.png")  # the extension does not matter; the content does
    truncated_copy(img / "big.png", img / "3.png")
    (img / "5.png").write_text("hello, I am text\n")
    (img / "7.png").write_bytes(b"")
    with pytest.raises(CrossmodalError, match=r"column 'image_path': 4 rows \(lines 3, 5, 7, 9\).*cannot decode"):
        check_inputs(table_for(csv), COLUMNS, "error")
    frame = pd.read_csv(csv)
    frame["image_path"] = ["img/big.jpg", "img/big.png"] * 6
    frame.to_csv(csv, index=False)
    check_inputs(table_for(csv), COLUMNS, "error")


def escape_csv(tmp_path):
    """A data set whose rows 2, 3 and 4 (lines 3, 4, 5) point outside its folder: ../, absolute, symlink."""
    csv = write_dataset(tmp_path / "ds", n=12)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (tmp_path / "ds" / "img" / "sneaky.png").symlink_to(outside)
    frame = pd.read_csv(csv)
    frame.loc[1, "image_path"] = "../secret.png"
    frame.loc[2, "image_path"] = str(outside)
    frame.loc[3, "image_path"] = "img/sneaky.png"
    frame.loc[4, "image_path"] = str(tmp_path / "ds" / "img" / "4.png")  # absolute but inside: fine
    frame.to_csv(csv, index=False)
    return csv


def test_paths_outside_the_data_root_are_unusable(tmp_path):
    csv = escape_csv(tmp_path)
    with pytest.raises(CrossmodalError) as err:
        check_inputs(table_for(csv), COLUMNS, "error")
    message = str(err.value)
    assert message.startswith(f"{csv.resolve()}: column 'image_path': 3 rows (lines 3, 4, 5) with unusable image "
                              f"input, e.g. line 3: {(tmp_path / 'secret.png').resolve()}: outside data.root "
                              f"(set data.allow_outside_root=true to allow)")
    table = table_for(csv)
    report = check_inputs(table, COLUMNS, "drop")
    assert sum(r.get("image", 0) for r in report.values()) == 3
    assert sum(len(f) for f in table.splits.values()) == 9
    table = table_for(csv)
    check_inputs(table, COLUMNS, "zero")
    assert sum((~f["has_image"]).sum() for f in table.splits.values()) == 3
    check_inputs(table_for(csv), COLUMNS, "error", allow_outside_root=True)


def test_data_root_replaces_the_csv_folder(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=12)
    moved = tmp_path / "elsewhere" / "data.csv"
    moved.parent.mkdir()
    csv.rename(moved)
    table = read_labelled(Classification(), csv=str(moved), root=str(tmp_path / "ds"), columns=COLUMNS,
                          modalities=None, val_fraction=0.25, test_fraction=0.25, seed=0)
    check_inputs(table, COLUMNS, "error")
    with pytest.raises(CrossmodalError, match="file not found"):
        check_inputs(table_for(moved), COLUMNS, "error")


def test_unknown_labels_dropped_by_read_labelled_are_in_the_report(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv)
    frame.loc[frame.index[frame["split"] == "test"][:1], "label"] = "bird"
    frame.to_csv(csv, index=False)
    (tmp_path / "img" / "0.png").unlink()
    table = read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25,
                          test_fraction=0.25, seed=0, on_missing="drop")
    report = check_inputs(table, COLUMNS, "drop")
    assert report == {"train": {"image": 1}, "val": {}, "test": {"unknown_label": 1}}


class CountingProbe:
    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        probe = validation.PROBES["image"]

        def counting(path):
            self.paths.append(path)
            return probe(path)
        monkeypatch.setitem(validation.PROBES, "image", counting)


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(dataset_csv, tmp_path, monkeypatch):
    probes = CountingProbe(monkeypatch)
    cache = tmp_path / "cache"
    check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
    assert len(probes.paths) == 12
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"  # one file per data root, no temporary files left
    probes.paths.clear()
    check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
    assert probes.paths == []
    img = dataset_csv.parent / "img"
    Image.new("RGB", (5, 5)).save(img / "3.png")  # changed: size and mtime differ
    (img / "4.png").write_bytes(b"")              # changed and now broken
    os.utime(img / "4.png", ns=(0, 0))
    with pytest.raises(CrossmodalError, match=r"line 6\).*cannot decode"):
        check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
    assert sorted(probes.paths) == [str((img / f"{i}.png").resolve()) for i in (3, 4)]
    probes.paths.clear()
    with pytest.raises(CrossmodalError, match="cannot decode"):  # failures are never cached
        check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
    assert probes.paths == [str((img / "4.png").resolve())]


def test_corrupt_or_unwritable_cache_is_ignored(dataset_csv, tmp_path, monkeypatch):
    probes = CountingProbe(monkeypatch)
    cache = tmp_path / "cache"
    check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
    (cache_file,) = cache.iterdir()
    for junk in ("{not json", "[]", '{"version": 1}', '{"version": 1, "root": "x", "entries": []}', "\x00\xff"):
        cache_file.write_text(junk, encoding="latin-1")
        probes.paths.clear()
        check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(cache))
        assert len(probes.paths) == 12
        assert json.loads(cache_file.read_text())["version"] == validation.CACHE_VERSION  # rewritten whole
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=str(blocked / "cache"))  # cannot mkdir: fine


def test_no_cache_when_cache_dir_is_none(dataset_csv, monkeypatch):
    probes = CountingProbe(monkeypatch)
    for _ in range(2):
        check_inputs(table_for(dataset_csv), COLUMNS, "error", cache_dir=None)
    assert len(probes.paths) == 24


def test_cache_never_lets_a_path_outside_the_root_through(tmp_path):
    csv = escape_csv(tmp_path)
    cache = str(tmp_path / "cache")
    check_inputs(table_for(csv), COLUMNS, "error", allow_outside_root=True, cache_dir=cache)
    with pytest.raises(CrossmodalError, match="outside data.root"):
        check_inputs(table_for(csv), COLUMNS, "error", cache_dir=cache)


def test_csv_config_documents_the_new_keys_and_load_data_passes_them(dataset_csv, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    data = OmegaConf.load(Path(__file__).parents[2] / "configs" / "data" / "csv.yaml")
    assert data.allow_outside_root is False
    assert data.validation_cache == "~/.cache/crossmodal/validation"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.validation_cache == f"{tmp_path}/xdg/crossmodal/validation"
    data.csv = str(dataset_csv)
    load_data(data_settings(data), None, seed=0)
    assert len(list((tmp_path / "xdg" / "crossmodal" / "validation").glob("*.json"))) == 1
    frame = pd.read_csv(dataset_csv)
    frame.loc[0, "image_path"] = "../outside.png"
    frame.to_csv(dataset_csv, index=False)
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    with pytest.raises(CrossmodalError, match="outside data.root"):
        load_data(data_settings(data), None, seed=0)
    data.allow_outside_root, data.validation_cache = True, None
    load_data(data_settings(data), None, seed=0)
