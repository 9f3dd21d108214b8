"""The CSV contract: columns, splits, labels and the one-line errors for each way a CSV can be wrong."""
from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import write_dataset
from crossmodal_cli.data.table import stratified_split
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def load(csv, task=None, **kw):
    args = dict(csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25, test_fraction=0.25, seed=0)
    args.update(kw)
    return read_labelled(task if task is not None else Classification(), **args)


def test_every_modality_with_a_column_is_used_and_paths_are_resolved_against_the_csv_folder(dataset_csv):
    task = Classification()
    table = load(dataset_csv, task)
    assert table.modalities == ["image", "text", "audio"]
    assert task.classes == ["cat", "dog"]
    train = table.splits["train"]
    assert all(p.startswith(str(dataset_csv.parent)) for p in train["image"])
    assert set(train["target"]) == {0, 1}
    assert sum(len(f) for f in table.splits.values()) == 12


def test_stratified_split_is_seeded_and_keeps_label_proportions(dataset_csv):
    a, b = load(dataset_csv, seed=1), load(dataset_csv, seed=1)
    c = load(dataset_csv, seed=2)
    assert a.splits["val"]["line"].tolist() == b.splits["val"]["line"].tolist()
    assert a.splits["val"]["line"].tolist() != c.splits["val"]["line"].tolist()
    for split, n in {"train": 4, "val": 4, "test": 4}.items():  # 6 per label: round(1.5) = 2 to val and test
        frame = a.splits[split]
        assert len(frame) == n and frame["label"].nunique() == 2


def test_split_column_decides_the_split(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    table = load(csv)
    raw = pd.read_csv(csv)
    assert len(table.splits["val"]) == (raw["split"] == "val").sum()
    assert len(table.splits["test"]) == (raw["split"] == "test").sum()


def test_integer_labels_sort_numerically(tmp_path):
    csv = write_dataset(tmp_path, n=12)
    frame = pd.read_csv(csv)
    frame["label"] = [str(v) for v in [10, 2, 1] * 4]
    frame.to_csv(csv, index=False)
    task = Classification()
    load(csv, task, modalities=["text"])
    assert task.classes == ["1", "2", "10"]


def test_chosen_modalities_only(dataset_csv):
    assert load(dataset_csv, modalities=["text", "image"]).modalities == ["image", "text"]


def test_custom_column_names(tmp_path):
    csv = write_dataset(tmp_path)
    pd.read_csv(csv).rename(columns={"text": "caption", "label": "y"}).to_csv(csv, index=False)
    task = Classification()
    table = load(csv, task, columns={**COLUMNS, "text": "caption", "label": "y"})
    assert "text" in table.modalities and task.classes == ["cat", "dog"]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["label"]), r"column 'label' \(data.columns.label\) not found; the CSV has columns: "
                                          r"image_path, text, audio_path"),
    (lambda f: f.assign(label=["", *f["label"][1:]]), r"column 'label' is blank in 1 row \(line 2\)"),
    (lambda f: f.assign(split=["oops"] + ["train"] * (len(f) - 1)), r"column 'split' has values other than "
                                                                    r"train/val/test in 1 row \(line 2\)"),
    (lambda f: f.assign(split="train"), r"the val split has no rows"),
])
def test_bad_csv_gives_one_line_error_naming_file_column_and_rows(dataset_csv, change, message):
    change(pd.read_csv(dataset_csv, dtype=str, keep_default_na=False)).to_csv(dataset_csv, index=False)
    with pytest.raises(CrossmodalError, match=message) as err:
        load(dataset_csv)
    assert str(dataset_csv) in str(err.value) or "split" in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_and_missing_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CrossmodalError, match="empty.csv: the CSV file is empty"):
        load(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("image_path,text,label\n")
    with pytest.raises(CrossmodalError, match="header but no data rows"):
        load(header_only)
    with pytest.raises(CrossmodalError, match="nope.csv: CSV file not found"):
        load(tmp_path / "nope.csv")


def test_asking_for_a_modality_without_a_column(tmp_path):
    csv = write_dataset(tmp_path)
    pd.read_csv(csv).drop(columns=["audio_path"]).to_csv(csv, index=False)
    with pytest.raises(CrossmodalError, match=r"'audio_path' \(data.columns.audio\) not found"):
        load(csv, modalities=["image", "audio"])


def test_label_only_in_validation_is_reported(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv)
    frame.loc[frame["split"] == "val", "label"] = "bird"
    frame.to_csv(csv, index=False)
    with pytest.raises(CrossmodalError, match="label 'bird' in the val split is not in the training split"):
        load(csv)


def test_fixed_vocabulary_for_evaluation(dataset_csv):
    table = load(dataset_csv, classes=["dog", "cat", "cow"], keep=["test"])
    assert list(table.splits) == ["test"]
    assert set(table.splits["test"]["target"]) <= {0, 1}
    assert (table.splits["test"]["label"] == "dog").eq(table.splits["test"]["target"] == 0).all()


def test_stratified_split_keeps_a_training_row_for_rare_labels():
    frame = pd.DataFrame({"label": ["a"] * 10 + ["b"], "line": range(2, 13)})
    parts = stratified_split(frame, 0.3, 0.3, seed=0)
    assert "b" in set(parts["train"]["label"])
    assert sum(len(p) for p in parts.values()) == 11


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text('text,label,split\n\n"two\nlines",cat,train\n,,\na,,train\nb,dog,val\n', encoding="utf-8")
    with pytest.raises(CrossmodalError, match=r"column 'label' is blank in 1 row \(line 6\)"):
        load(csv)
    csv.write_text('text,label,split\n\n"two\nlines",cat,train\n,,\nb,dog,val\n', encoding="utf-8")
    table = load(csv, classes=["cat", "dog"])
    assert table.splits["train"]["line"].tolist() == [3] and table.splits["val"]["line"].tolist() == [6]
    assert table.splits["train"]["text"].tolist() == ["two\nlines"]


@pytest.mark.parametrize("data, message", [
    ("image_path,text,label\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    ("text,label\ncafé,cat\n".encode("latin-1"), r"not UTF-8 text \(.* at line 2, byte 14\); save the CSV as UTF-8"),
    (b"text,label,text\na,b,c\n", r"column name 'text' appear more than once in the header"),
    (b"text,label\na,cat\nb,dog,extra,more\n", r"1 row \(line 3\) with more cells than the header's 2; quote cells"),
])
def test_unreadable_csv_gives_one_line_error(tmp_path, data, message):
    csv = tmp_path / "data.csv"
    csv.write_bytes(data)
    with pytest.raises(CrossmodalError, match=message) as err:
        load(csv, modalities=["text"])
    assert str(csv) in str(err.value) and len(str(err.value).splitlines()) == 1


def test_short_rows_are_padded_and_unnamed_columns_ignored(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text(",text,label,split\n0,a,cat,train\n1,b,dog,val\n2,c,cat,train,\n3,d,dog,test\n4,e,cat\n")
    with pytest.raises(CrossmodalError, match=r"has values other than train/val/test in 1 row \(line 6\) \(e.g. ''\)"):
        load(csv)


def test_cells_with_line_breaks_are_escaped_in_error_messages(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv)
    frame.loc[frame["split"] == "val", "label"] = "bi\nr\u2028d"
    frame.to_csv(csv, index=False)
    with pytest.raises(CrossmodalError, match=r"label 'bi\\nr\\u2028d' in the val split") as err:
        load(csv)
    assert len(str(err.value).splitlines()) == 1


def test_label_only_in_validation_is_dropped_and_counted_with_on_missing_drop(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv)
    bird = frame.index[frame["split"] == "val"][:2]
    frame.loc[bird, "label"] = "bird"
    frame.to_csv(csv, index=False)
    with pytest.raises(CrossmodalError, match=r"label 'bird' in the val split is not in the training split \(2 rows "
                                              r"\(lines 3, 5\)\); known labels: cat, dog \(fix the labels, or set "
                                              r"data.on_missing=drop"):
        load(csv)
    for mode in ("drop", "zero"):
        task = Classification()
        table = load(csv, task, on_missing=mode)
        assert table.report == {"val": {"unknown_label": 2}}
        assert "bird" not in set(table.splits["val"]["label"]) and task.classes == ["cat", "dog"]
        assert len(table.splits["val"]) == (frame["split"] == "val").sum() - 2


def test_val_split_left_empty_by_unknown_labels_is_an_error(tmp_path):
    csv = write_dataset(tmp_path, n=12, with_split=True)
    frame = pd.read_csv(csv)
    frame.loc[frame["split"] == "val", "label"] = "bird"
    frame.to_csv(csv, index=False)
    with pytest.raises(CrossmodalError, match="the val split has no rows left after dropping"):
        load(csv, on_missing="drop")


def test_unknown_on_missing_value(dataset_csv):
    with pytest.raises(CrossmodalError, match="data.on_missing=skip: use error, drop, zero"):
        load(dataset_csv, on_missing="skip")


def test_paths_are_resolved_through_dotdot_and_symlinks(tmp_path):
    csv = write_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "link").symlink_to(tmp_path / "ds" / "img")
    frame = pd.read_csv(csv)
    frame.loc[0, "image_path"] = "img/../img/0.png"
    frame.loc[1, "image_path"] = "link/1.png"
    frame.loc[2, "image_path"] = str(tmp_path / "ds" / "img" / "2.png")
    frame.to_csv(csv, index=False)
    table = load(csv, val_fraction=0, test_fraction=0, keep=["train"])
    rows = table.splits["train"].set_index("line")
    for line, i in ((2, 0), (3, 1), (4, 2)):
        assert rows.loc[line, "image"] == str((tmp_path / "ds" / "img" / f"{i}.png").resolve())
    assert set(rows["root"]) == {str((tmp_path / "ds").resolve())}
