"""CSV mistakes that used to pass silently or end in a traceback: column names, data.csv + data.test_csv, a single
class, other separators, missing-value labels, and the data settings load_data logs first."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import write_dataset
from crossmodal_cli.pipeline.data import load_data
from crossmodal_cli.settings import from_values
from crossmodal_cli.settings.run import DataSettings
from crossmodal_cli.data.csvfile import detect_separator
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def data_settings(data):
    """The data group of a config, as the typed settings load_data reads."""
    return from_values(DataSettings, OmegaConf.to_container(data, resolve=True))
CONFIGS = Path(__file__).parents[2] / "configs" / "data"


def load(csv, task=None, **kw):
    args = dict(csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25, test_fraction=0.25, seed=0)
    args.update(kw)
    return read_labelled(task if task is not None else Classification(), **args)


def rewrite(csv: Path, change) -> None:
    change(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)


def one_line_error(match: str, call, *args, **kw) -> str:
    with pytest.raises(CrossmodalError, match=match) as err:
        call(*args, **kw)
    message = str(err.value)
    assert "\n" not in message
    return message


# ---- 1. column names ---------------------------------------------------------------------------------------------

def test_a_column_the_user_named_must_exist_even_when_modalities_are_auto_detected(dataset_csv):
    message = one_line_error(r"column 'file_path' \(data.columns.image\) not found; the CSV has columns: "
                             r"image_path, text, audio_path, label$", load, dataset_csv,
                             columns={**COLUMNS, "image": "file_path"}, explicit={"image"})
    assert message.startswith(str(dataset_csv))


def test_load_data_treats_names_that_differ_from_csv_yaml_as_explicit(dataset_csv):
    data = OmegaConf.load(CONFIGS / "csv.yaml")
    data.csv, data.validation_cache = str(dataset_csv), None
    data.columns.image = "file_path"
    one_line_error(r"column 'file_path' \(data.columns.image\) not found; the CSV has columns", load_data,
                   data_settings(data), None, seed=0)
    data.columns.image = "image_path"  # the default again: auto-detection as before
    assert load_data(data_settings(data), None, seed=0).modalities == ["image", "text", "audio"]


def test_a_named_column_that_differs_only_in_case_is_pointed_out(dataset_csv):
    rewrite(dataset_csv, lambda f: f.rename(columns={"text": "Caption"}))
    one_line_error(r"column 'caption' \(data.columns.text; 'Caption' differs only in case\) not found", load,
                   dataset_csv, columns={**COLUMNS, "text": "caption"}, explicit={"text"})


def test_a_named_split_column_must_exist(dataset_csv):
    one_line_error(r"column 'fold' \(data.columns.split\) not found; the CSV has columns: image_path", load,
                   dataset_csv, columns={**COLUMNS, "split": "fold"}, explicit={"split"})


def test_a_default_name_matches_a_header_that_differs_only_in_case(tmp_path, caplog):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    rewrite(csv, lambda f: f.rename(columns={"image_path": "Image_Path", "label": "LABEL", "split": "Split"}))
    task = Classification()
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.data.columns"):
        table = load(csv, task)
    assert table.modalities == ["image", "text", "audio"] and task.classes == ["cat", "dog"]
    assert len(table.splits["test"]) == 2  # the split column was used, not a stratified split
    assert table.columns["image"] == "Image_Path"
    lines = [r.getMessage() for r in caplog.records if "the case differs" in r.getMessage()]
    assert lines == [f"{csv}: using column 'Image_Path' for data.columns.image='image_path', 'LABEL' for "
                     f"data.columns.label='label', 'Split' for data.columns.split='split' (the case differs)"]


def test_an_exact_match_wins_over_one_that_differs_in_case(dataset_csv):
    rewrite(dataset_csv, lambda f: f.assign(Label="x"))
    task = Classification()
    load(dataset_csv, task)
    assert task.classes == ["cat", "dog"]


def test_two_headers_matching_a_default_name_when_case_is_ignored_are_an_error(dataset_csv):
    rewrite(dataset_csv, lambda f: f.rename(columns={"label": "Label"}).assign(LABEL="x"))
    one_line_error(r"columns 'Label' and 'LABEL' both match data.columns.label='label' when case is ignored", load,
                   dataset_csv)


def test_no_modality_column_lists_the_columns_found(dataset_csv):
    rewrite(dataset_csv, lambda f: f.rename(columns={"image_path": "img", "text": "caption", "audio_path": "wav"}))
    one_line_error(r"none of the modality columns 'image_path', 'text', 'audio_path' found .*; the CSV has columns: "
                   r"img, caption, wav, label$", load, dataset_csv)


# ---- 2. data.csv and data.test_csv -------------------------------------------------------------------------------

@pytest.fixture
def held_out(tmp_path) -> Path:
    """A second CSV (its own files) to be the test split."""
    return write_dataset(tmp_path / "held_out", n=6, seed=1)


def test_test_csv_with_a_split_column_csv_is_the_test_split(tmp_path, held_out, caplog):
    csv = write_dataset(tmp_path / "ds", n=12, with_split=True)
    rewrite(csv, lambda f: f.assign(split=f["split"].replace("test", "train")))
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.data.table"):
        table = load(csv, test_csv=str(held_out))
    assert set(table.splits["test"]["source"]) == {str(held_out.resolve())} and len(table.splits["test"]) == 6
    assert len(table.splits["train"]) + len(table.splits["val"]) == 12
    assert [r.getMessage() for r in caplog.records if "test split" in r.getMessage()] == [
        f"test split: data.test_csv={held_out}; train and val: data.csv={csv}, by its column 'split'"]


def test_test_csv_with_a_stratified_csv_leaves_no_test_rows_in_it(dataset_csv, held_out, caplog):
    task = Classification()
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.data.table"):
        table = load(dataset_csv, task, test_csv=str(held_out))
    ours = pd.concat([table.splits["train"], table.splits["val"]])
    assert len(ours) == 12 and set(ours["source"]) == {str(dataset_csv.resolve())}
    assert len(table.splits["val"]) == 4  # val_fraction 0.25 of 6 per label; test_fraction unused
    assert "data.test_fraction unused" in caplog.text
    evaluated = load(dataset_csv, test_csv=str(held_out), keep=["val"], classes=task.classes)
    assert evaluated.splits["val"]["line"].tolist() == table.splits["val"]["line"].tolist()


def test_test_rows_in_csv_and_a_test_csv_are_ambiguous(tmp_path, held_out):
    csv = write_dataset(tmp_path / "ds", n=12, with_split=True)
    one_line_error(rf"{csv}: column 'split' puts 2 rows \(lines 9, 13\) in the test split, and data.test_csv=.* is "
                   r"set too, so the test split is ambiguous; remove one of them", load, csv, test_csv=str(held_out))


# ---- 3. a single class -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_split, change", [
    (False, lambda f: f.assign(label="dog")),
    (True, lambda f: f.assign(label=["dog" if s == "train" else "cat" for s in f["split"]])),
])
def test_a_training_split_with_one_class_is_an_error(tmp_path, with_split, change):
    csv = write_dataset(tmp_path, n=12, with_split=with_split)
    rewrite(csv, lambda f: change(f).rename(columns={"label": "y"}))
    message = one_line_error(r"column 'y': the training split has only one class \('dog', \d+ rows\); "
                             r"classification needs at least two", load, csv, columns={**COLUMNS, "label": "y"})
    assert message.startswith(str(csv))


# ---- 4. separators -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("separator, name", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_other_separators_are_detected_and_logged(dataset_csv, separator, name, caplog):
    expected_task, task = Classification(), Classification()
    expected = load(dataset_csv, expected_task)
    frame = pd.read_csv(dataset_csv, dtype=str)
    frame.loc[0, "text"] = f"a caption{separator} with the separator, quoted"
    frame.to_csv(dataset_csv, index=False, sep=separator)
    with caplog.at_level(logging.INFO, logger="crossmodal_cli.data.csvfile"):
        table = load(dataset_csv, task)
    assert f"cells are separated by {name}s (detected from the header" in caplog.text
    assert task.classes == expected_task.classes and table.modalities == expected.modalities
    for split, rows in expected.splits.items():
        assert table.splits[split]["line"].tolist() == rows["line"].tolist()
    assert f"a caption{separator} with" in pd.concat(table.splits.values())["text"].tolist()[0]
    task = Classification()
    load(dataset_csv, task, separator=separator)
    assert task.classes == ["cat", "dog"]


def test_line_numbers_stay_exact_with_semicolons(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text('text;label;split\n\n"two\nlines; one cell";cat;train\nb;NaN;val\n', encoding="utf-8")
    one_line_error(r"column 'label' is blank or a missing-value marker \(e.g. 'NaN'\) in 1 row \(line 5\)", load, csv)


def test_a_chosen_separator_is_used_as_given(dataset_csv):
    pd.read_csv(dataset_csv, dtype=str).to_csv(dataset_csv, index=False, sep=";")
    one_line_error(r"none of the modality columns .* the CSV has columns: image_path;text;audio_path;label$", load,
                   dataset_csv, separator=",")
    one_line_error(r"data.separator=':': use auto, ',', ';', '\\t' or '\|'", load, dataset_csv, separator=":")


@pytest.mark.parametrize("text, separator", [
    ("a,b,c\n1,2,3\n", ","),
    ("a;b;c\n", ";"),
    ('"x,y";b;c\n', ";"),            # quoted commas do not count
    ("a;b,c\n", ","),                # a tie: the comma
    ("label\n", ","),                # one column: nothing to detect
    ("\n\n;;\r\na\tb\tc\r\n", "\t"),  # blank lines and rows of empty cells before the header
    ('"multi\nline|x";a;b\n', ";"),   # a quoted line break stays in the header line
])
def test_separator_detection_reads_the_header_line_outside_quotes(text, separator):
    assert detect_separator(text) == separator


# ---- 6. missing-value labels -------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["NaN", "NA", "N/A", "null", "None", "nan", "<NA>", "#N/A", "NULL", "NAN", "n/a",
                                   " NaN "])
def test_missing_value_labels_are_blank_labels(dataset_csv, label):
    rewrite(dataset_csv, lambda f: f.assign(label=[*f["label"][:2], label, *f["label"][3:]]))
    one_line_error(rf"{dataset_csv}: column 'label' is blank or a missing-value marker \(e.g. '{label.strip()}'\) in "
                   r"1 row \(line 4\); every row needs a label", load, dataset_csv)


@pytest.mark.parametrize("label", ["none", "na", "Nancy", "nil"])
def test_words_that_only_look_missing_stay_classes(dataset_csv, label):
    rewrite(dataset_csv, lambda f: f.assign(label=[label if i % 2 else "dog" for i in range(len(f))]))
    task = Classification()
    load(dataset_csv, task)
    assert label in task.classes


# ---- 7. the settings in the first log lines ----------------------------------------------------------------------

@pytest.mark.parametrize("config", ["csv", "demo"])
def test_load_data_logs_the_effective_settings_first(dataset_csv, config, caplog):
    data = OmegaConf.merge(OmegaConf.load(CONFIGS / "csv.yaml"),
                           OmegaConf.masked_copy(OmegaConf.load(CONFIGS / "demo.yaml"), ["image_size", "text", "audio"])
                           if config == "demo" else {})
    data.csv, data.validation_cache = str(dataset_csv), None
    with caplog.at_level(logging.INFO):
        load_data(data_settings(data), None, seed=0)
    first, second = [r.getMessage() for r in caplog.records[:2]]
    assert first == f"data: csv={dataset_csv}; separator 'auto'; on_missing=error"
    size, length, rate, seconds = (32, 16, 8000, 0.5) if config == "demo" else ("(the encoder's)", 128, "(the encoder's)", 5.0)
    assert second == (f"data inputs: image {size} px, resize (the encoder's), augment False; text max {length} "
                      f"tokens; audio {rate} Hz, {seconds} s")
