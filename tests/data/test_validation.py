"""File checks before training: missing, not a file, undecodable images and audio."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import write_dataset
from crossmodal_cli.data.table import load_table
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def table_for(csv):
    return load_table(csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25, test_fraction=0.25, seed=0)


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
