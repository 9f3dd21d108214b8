"""Tables from pandas DataFrames (the Python API): the same columns, splits, checks and errors as the CSV of the
same rows; rows named as DataFrame rows; paths resolved against data.root (else the working directory) and not
confined to it; and data/ importing nothing above it."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import write_dataset
from crossmodal_cli.data.csvfile import describe_rows
from crossmodal_cli.data.table import LabelColumns, load_table
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}
ARGS = dict(columns=COLUMNS, modalities=None, val_fraction=0.25, test_fraction=0.25, seed=0)


def labelled(task=None, **kw):
    return read_labelled(task if task is not None else Classification(), **{**ARGS, **kw})


def one_line(match, call, *args, **kw) -> str:
    with pytest.raises(CrossmodalError, match=match) as err:
        call(*args, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def assert_same_table(from_frame, from_csv) -> None:
    """Equal splits, columns, row order and cells; only `source` and `root` tell a DataFrame's rows apart."""
    assert list(from_frame.splits) == list(from_csv.splits) and from_frame.modalities == from_csv.modalities
    assert from_frame.columns == from_csv.columns and from_frame.headers == from_csv.headers
    for split, rows in from_csv.splits.items():
        mine = from_frame.splits[split]
        assert list(mine.columns) == list(rows.columns)
        others = [c for c in rows.columns if c not in ("source", "root")]
        pd.testing.assert_frame_equal(mine[others], rows[others], check_dtype=False)
        assert set(mine["source"]) <= {"DataFrame", f"{split} DataFrame"} and set(mine["root"]) <= {""}


def test_data_imports_no_task_model_or_pipeline():
    modules = ["table", "dataset", "validation", "preprocessed", "cachefiles", "modalities", "csvfile", "sources",
               "columns", "cells", "probes", "collate", "demo", "colours", "paraphrase"]
    code = (f"import sys; import {', '.join('crossmodal_cli.data.' + m for m in modules)}; "
            "above = ('tasks', 'model', 'encoders', 'engine', 'features', 'build', 'train', 'config', 'pipeline', "
            "'fusion', 'factory'); "
            "print([m for m in sys.modules if m.split('.')[1:2] and m.split('.')[0] == 'crossmodal_cli' "
            "and m.split('.')[1] in above])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_dataframe_table_equals_the_csv_table_of_the_same_rows(dataset_csv):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)
    task_csv, task_frame = Classification(), Classification()
    from_csv = labelled(task_csv, csv=str(dataset_csv))
    from_frame = labelled(task_frame, frames={"csv": frame}, root=str(dataset_csv.parent))
    assert_same_table(from_frame, from_csv)
    assert task_frame.classes == task_csv.classes == ["cat", "dog"]
    assert from_frame.splits["train"]["line"].tolist() == from_csv.splits["train"]["line"].tolist()


def test_dataframes_per_split_equal_csvs_per_split(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    parts = {s: frame[frame["split"] == s].drop(columns="split") for s in ("train", "val")}
    for split, part in parts.items():
        part.to_csv(tmp_path / f"{split}.csv", index=False)
    from_csv = labelled(train_csv=str(tmp_path / "train.csv"), val_csv=str(tmp_path / "val.csv"), keep=["train", "val"])
    from_frame = labelled(frames=parts, root=str(tmp_path), keep=["train", "val"])
    assert_same_table(from_frame, from_csv)
    assert set(from_frame.splits["val"]["source"]) == {"val DataFrame"}


def test_cells_become_the_text_a_csv_of_them_holds(tmp_path):
    csv = write_dataset(tmp_path, n=12)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False).assign(label=[10, 2, 1] * 4)
    frame.to_csv(csv, index=False)
    task = Classification()
    table = labelled(task, frames={"csv": frame.assign(text=[None, float("nan"), *frame["text"][2:]])},
                     root=str(tmp_path), modalities=["text"])
    assert task.classes == ["1", "2", "10"]
    rows = pd.concat(table.splits.values()).set_index("line")
    assert rows.loc[2, "text"] == "" and rows.loc[3, "text"] == "" and rows.loc[4, "text"] == "caption number 2"


def test_dataframe_mistakes_name_the_dataframe_and_its_rows(dataset_csv):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)
    one_line(r"^DataFrame: column 'label' is blank in 1 row \(DataFrame row 3\); every row needs a label",
             labelled, frames={"csv": frame.assign(label=[*frame["label"][:3], "", *frame["label"][4:]])})
    one_line(r"^DataFrame: column 'label' \(data.columns.label\) not found; the DataFrame has columns: image_path, "
             r"text, audio_path$", labelled, frames={"csv": frame.drop(columns="label")})
    one_line(r"^val DataFrame: the DataFrame has no rows", labelled, frames={"train": frame, "val": frame.iloc[:0]})
    one_line(r"frames: unknown key 'validation'", labelled, frames={"train": frame, "validation": frame})
    one_line(r"frames\['csv'\]: expected a pandas DataFrame, got dict", labelled, frames={"csv": {}})
    one_line(r"data.csv=.* and a DataFrame are both given", labelled, csv=str(dataset_csv), frames={"csv": frame})
    one_line(r"no validation DataFrame: give frames\['val'\]", labelled, frames={"train": frame})
    one_line(r"^DataFrame: column 'text' holds bytes or an image in 1 row \(DataFrame row 1\); only image and audio",
             labelled, frames={"csv": frame.assign(text=["a", b"png", *frame["text"][2:]])})
    unseen = frame.assign(split=["train"] * 8 + ["val"] * 4, label=["cat", "dog"] * 4 + ["bird"] * 4)
    one_line(r"^DataFrame: label 'bird' in the val split is not in the training split \(4 rows \(DataFrame rows 8, 9, "
             r"10, 11\)\)", labelled, frames={"csv": unseen})


def test_describe_rows_counts_dataframe_rows_from_zero():
    rows = pd.DataFrame({"source": "DataFrame", "line": [2, 5]})
    assert describe_rows(rows) == "2 rows (DataFrame rows 0, 3)"
    assert describe_rows(rows.assign(source="/d/data.csv")) == "2 rows (lines 2, 5)"


def test_relative_paths_resolve_against_root_or_the_working_directory(dataset_csv, tmp_path, monkeypatch):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)
    table = labelled(frames={"csv": frame}, root=str(dataset_csv.parent))
    assert all(p.startswith(str(dataset_csv.parent.resolve())) for p in table.splits["train"]["image"])
    check_inputs(table, COLUMNS, "error", workers=2)
    monkeypatch.chdir(dataset_csv.parent)
    check_inputs(labelled(frames={"csv": frame}), COLUMNS, "error", workers=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CrossmodalError, match=r"^DataFrame: column 'image_path': 12 rows \(DataFrame rows 0, 1, 2, "
                                              r"3, 4, \.\.\.\) with unusable image input, e.g. DataFrame row 0: "
                                              r".*file not found"):
        check_inputs(labelled(frames={"csv": frame}), COLUMNS, "error", workers=2)


def test_absolute_and_outside_paths_need_no_allow_outside_root(dataset_csv, tmp_path):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)
    frame["image_path"] = [str(dataset_csv.parent / p) for p in frame["image_path"]]
    frame["audio_path"] = "../" + dataset_csv.parent.name + "/" + frame["audio_path"]
    (tmp_path / "root").mkdir()
    table = labelled(frames={"csv": frame}, root=str(tmp_path / "root"))
    report = check_inputs(table, COLUMNS, "error", workers=2, cache_dir=str(tmp_path / "cache"))
    assert report == {"train": {}, "val": {}, "test": {}}
    assert set(pd.concat(table.splits.values())["root"]) == {""}


def test_load_table_reads_no_label_without_label_columns(dataset_csv):
    frame = pd.read_csv(dataset_csv, dtype=str, keep_default_na=False).drop(columns="label")
    table = load_table(frames={"test": frame}, keep=["test"], labels=None, **ARGS)
    assert "label" not in table.splits["test"] and "target" not in table.splits["test"] and table.headers == {}
    labels = LabelColumns(columns={"label": "label"})
    with_labels = load_table(csv=str(dataset_csv), labels=labels, **ARGS)
    assert "label" in with_labels.splits["train"] and "target" not in with_labels.splits["train"]
    assert with_labels.headers == {"label": "label"}
    predicted = read_labelled(Classification.with_classes(["cat", "dog"]), labels_needed=False,
                              frames={"test": frame}, keep=["test"], **ARGS)
    assert predicted.splits["test"]["target"].tolist() == [0] * 12
