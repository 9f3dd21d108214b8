"""The tabular preprocessing: type inference and overrides, transforms fitted on the training split only,
vocabularies with min_count and unknown counts, missing masks, the state round trip, every one-line error with its
file, column and line, the as_text serialisation, the report and the tensors of a batch."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal_cli.data.csvfile import read_csv
from crossmodal_cli.data.tabular import (TabularArrays, TabularOptions, TabularPreprocessor, describe_unknown)
from crossmodal_cli.data.tabular_batch import collate_tabular, tabular_row, tabular_rows
from crossmodal_cli.data.tabular_columns import parse_number
from crossmodal_cli.data.tabular_text import tabular_texts, with_tabular_text
from crossmodal_cli.errors import CrossmodalError


def options(columns, **kw) -> TabularOptions:
    values = {"categorical": (), "numeric": (), "transform": "standard", "transforms": {}, "min_count": 1, **kw}
    return TabularOptions(columns=columns, **values)


def frame(**columns) -> pd.DataFrame:
    """Cells as strings, indexed by CSV line (header = line 1), as read_csv gives them."""
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.Index(range(2, n + 2), name="line"), dtype=object)


TRAIN = frame(price=["10", "20", "", "1e3", "-5.5"], brand=["acme", "acme", "globex", "", "acme"],
              zip=["0101", "0202", "0101", "0303", "0202"])


def fit(train=TRAIN, columns=("price", "brand", "zip"), **kw) -> TabularPreprocessor:
    return TabularPreprocessor.fit(train, options(columns, **kw), "train.csv")


@pytest.mark.parametrize("text, value", [("12", 12.0), ("-0.5", -0.5), ("+3.", 3.0), (".25", 0.25),
                                         ("1e-3", 1e-3), ("2E5", 2e5), ("nan", None), ("inf", None),
                                         ("-Infinity", None), ("1,000", None), ("1_000", None), ("1e999", None),
                                         ("n/a", None), ("12 kg", None)])
def test_only_plain_decimals_are_numbers(text, value):
    assert parse_number(text) == value


def test_types_are_inferred_from_the_training_split_and_overrides_win():
    pre = fit()
    assert pre.numeric_columns == ["price", "zip"] and pre.categorical_columns == ["brand"]
    pre = fit(categorical=["zip"])
    assert pre.numeric_columns == ["price"] and pre.categorical_columns == ["brand", "zip"]
    words = frame(x=["1", "nan", "2"], y=["1", "2", "3"])
    assert TabularPreprocessor.fit(words, options(["x", "y"]), "t.csv").categorical_columns == ["x"]


def test_a_column_in_both_overrides_is_one_line():
    with pytest.raises(CrossmodalError, match=r"column 'zip' is in both data.tabular.categorical and "
                                              r"data.tabular.numeric; keep it in one$"):
        fit(categorical=["zip"], numeric=["zip"])


@pytest.mark.parametrize("kw, message", [
    ({"columns": ()}, "data.columns.tabular is empty"),
    ({"columns": ("price", "price")}, "names 'price' more than once"),
    ({"categorical": ["colour"]}, "data.tabular.categorical names 'colour', which is not in data.columns.tabular"),
    ({"transform": "minmax"}, "data.tabular.transform=minmax: use standard, quantile, log"),
    ({"transforms": {"price": "box"}}, "data.tabular.transforms.price=box: use standard"),
    ({"transforms": {"brand": "log"}, "categorical": ["brand"]}, "transforms apply to numeric columns only"),
    ({"min_count": 0}, "data.tabular.min_count=0: use a whole number of 1 or more"),
])
def test_contradictory_options_are_one_line(kw, message):
    columns = kw.pop("columns", ("price", "brand", "zip"))
    with pytest.raises(CrossmodalError, match=message):
        fit(columns=columns, **kw)


def test_a_word_in_a_forced_numeric_column_names_file_column_line_and_cell():
    train = frame(price=["10", "20", "about 5", "7"])
    with pytest.raises(CrossmodalError) as err:
        TabularPreprocessor.fit(train, options(["price"], numeric=["price"]), "train.csv")
    assert str(err.value) == ("train.csv: line 4: column 'price' is numeric (listed in data.tabular.numeric) but "
                              "holds 'about 5'; fix the cell, or list the column in data.tabular.categorical")


def test_a_word_in_a_numeric_column_of_another_split_names_its_line(tmp_path):
    pre = fit()
    csv = tmp_path / "val.csv"
    csv.write_text('price,brand,zip\n1,acme,"0101"\n\n"n/a",acme,0101\n')
    with pytest.raises(CrossmodalError, match=rf"^{csv}: line 4: column 'price' is numeric \(so typed on the "
                                              r"training split\) but holds 'n/a'; fix the cell, or list"):
        pre.transform(read_csv(csv), str(csv))


def test_cell_errors_use_a_tables_source_and_line_columns():
    table = frame(price=["1", "x"]).reset_index().assign(source="DataFrame")
    with pytest.raises(CrossmodalError, match=r"^DataFrame: DataFrame row 1: column 'price'"):
        fit().transform(table.assign(brand="acme", zip="1"), "ignored")


def test_a_missing_column_lists_the_columns_found():
    with pytest.raises(CrossmodalError, match=r"^train.csv: column 'colour' \(data.columns.tabular\) not found; "
                                              r"the CSV has columns: price, brand, zip$"):
        fit(columns=("price", "colour"))


@pytest.mark.parametrize("cells, message", [
    (["", " ", ""], "column 'c' is blank in every row of the training split; fill it, or remove it"),
    (["3", "", "3.0"], "column 'c' holds the single value '3' in every non-blank cell of the training split"),
    (["red", "red", ""], "column 'c' holds the single value 'red'"),
])
def test_useless_columns_are_one_line(cells, message):
    with pytest.raises(CrossmodalError, match=f"^train.csv: {message}"):
        TabularPreprocessor.fit(frame(c=cells), options(["c"]), "train.csv")


def test_min_count_leaving_no_value_is_one_line():
    with pytest.raises(CrossmodalError, match="no value of column 'c' occurs data.tabular.min_count=3 times"):
        TabularPreprocessor.fit(frame(c=["a", "b", "a"]), options(["c"], min_count=3), "t.csv")


@pytest.mark.parametrize("transform", ["standard", "quantile", "log"])
def test_each_transform_is_fitted_on_train_only(transform):
    train = frame(x=[str(v) for v in np.random.default_rng(0).lognormal(3, 1, 200).round(2)])
    pre = TabularPreprocessor.fit(train, options(["x"], transform=transform), "t.csv")
    probe = frame(x=["5", "20", "80"])
    before = pre.transform(probe, "v.csv").numeric
    with_val = pd.concat([probe, frame(x=["1e6"] * 50)])  # an extreme validation split changes nothing
    assert np.array_equal(pre.transform(with_val, "v.csv").numeric[:3], before)
    out = pre.transform(train, "t.csv").numeric[:, 0]
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.1  # roughly standard on the training split
    assert np.all(np.diff(before[:, 0]) > 0)  # monotone


def test_standard_and_log_use_the_training_mean_and_std():
    pre = TabularPreprocessor.fit(frame(x=["1", "3"]), options(["x"]), "t.csv")
    assert pre.transform(frame(x=["5"]), "v").numeric[0, 0] == pytest.approx(3.0)
    pre = TabularPreprocessor.fit(frame(x=["-9", "9"]), options(["x"], transform="log"), "t.csv")
    assert pre.transform(frame(x=["0", "9"]), "v").numeric[:, 0] == pytest.approx([0.0, 1.0])


def test_the_quantile_transform_gives_normal_scores_like_sklearn():
    values = np.random.default_rng(1).exponential(10, 500)
    pre = TabularPreprocessor.fit(frame(x=[repr(float(v)) for v in values]), options(["x"], transform="quantile"), "t")
    out = pre.transform(frame(x=[repr(float(v)) for v in values]), "t").numeric[:, 0]
    assert abs(np.median(out)) < 0.05 and abs(out.std() - 1) < 0.05
    assert pre.transform(frame(x=["-1e9", "1e9"]), "v").numeric[:, 0] == pytest.approx([out.min(), out.max()])
    preprocessing = pytest.importorskip("sklearn.preprocessing")  # a dev-only package: compared where present
    reference = preprocessing.QuantileTransformer(n_quantiles=500, output_distribution="normal")
    inner = (values > np.quantile(values, 0.02)) & (values < np.quantile(values, 0.98))
    expected = reference.fit_transform(values[:, None])[:, 0]
    assert np.abs(out[inner] - expected[inner]).max() < 0.05


def test_tied_quantiles_give_one_score_per_value():
    pre = TabularPreprocessor.fit(frame(x=["1"] * 50 + ["2"] * 30 + ["3"] * 20), options(["x"], transform="quantile"),
                                  "t")
    out = pre.transform(frame(x=["1", "1", "2", "3"]), "v").numeric[:, 0]
    assert out[0] == out[1] < out[2] < out[3]


def test_a_transform_for_a_column_inferred_categorical_is_one_line():
    with pytest.raises(CrossmodalError, match=r"^train.csv: data.tabular.transforms names 'brand', which holds "
                                              r"words in the training split and so is categorical"):
        fit(transforms={"brand": "log"})


def test_a_per_column_transform_overrides_the_run_wide_one():
    pre = fit(transform="quantile", transforms={"zip": "log"})
    assert pre.spec.transforms == {"price": "quantile", "zip": "log"}
    assert pre.report()["zip"]["transform"] == "log"


def test_blank_numeric_cells_are_zero_with_a_false_mask():
    arrays = fit().transform(TRAIN, "t")
    assert arrays.numeric.dtype == np.float32 and arrays.numeric_present.dtype == bool
    assert arrays.numeric_present[:, 0].tolist() == [True, True, False, True, True]
    assert arrays.numeric[2, 0] == 0.0


def test_vocabulary_ids_min_count_and_unknown_counts():
    train = frame(brand=["b", "a", "b", "a", "c", "", "b"])
    pre = TabularPreprocessor.fit(train, options(["brand"], min_count=2), "t.csv")
    assert pre.vocabularies["brand"] == ["b", "a"]  # count descending, then value
    assert pre.cardinalities == [4]
    arrays = pre.transform(train, "t.csv")
    assert arrays.categorical[:, 0].tolist() == [2, 3, 2, 3, 1, 0, 2]
    assert arrays.unknown == {"brand": 1}  # "c" is rarer than min_count
    val = pre.transform(frame(brand=["zz", "a", "yy", "zz", ""]), "val.csv")
    assert val.categorical[:, 0].tolist() == [1, 3, 1, 1, 0] and val.unknown == {"brand": 3}
    assert describe_unknown(val.unknown, "val") == [
        "val split: column 'brand': 3 values not in the training vocabulary (unseen, or rarer than "
        "data.tabular.min_count) mapped to unknown"]
    assert describe_unknown({"brand": 0}, "val") == []


def test_vocabulary_order_does_not_depend_on_row_order():
    cells = ["x", "y", "y", "z", "x", "w"]
    first = TabularPreprocessor.fit(frame(c=cells), options(["c"]), "t").vocabularies
    assert first == TabularPreprocessor.fit(frame(c=cells[::-1]), options(["c"]), "t").vocabularies
    assert first["c"] == ["x", "y", "w", "z"]


@pytest.mark.parametrize("transform", ["standard", "quantile", "log"])
def test_the_state_round_trip_reproduces_the_transform_exactly(transform):
    values = np.random.default_rng(2).normal(0, 3, 300)
    train = frame(x=[repr(float(v)) for v in values], c=[f"k{int(v) % 7}" for v in values * 10])
    pre = TabularPreprocessor.fit(train, options(["x", "c"], transform=transform), "t")
    assert pre.numeric_columns == ["x"] and pre.categorical_columns == ["c"]
    again = TabularPreprocessor.from_state(json.loads(json.dumps(pre.state())))
    probe = frame(x=[repr(float(v)) for v in np.random.default_rng(3).normal(0, 5, 100)], c=["k1", "new"] * 50)
    a, b = pre.transform(probe, "v"), again.transform(probe, "v")
    for key in ("numeric", "numeric_present", "categorical"):
        assert np.array_equal(a.inputs()[key], b.inputs()[key])
    assert again.spec == pre.spec and again.report() == pre.report() and again.cardinalities == pre.cardinalities


def test_a_state_of_another_version_is_one_line():
    state = fit().state() | {"version": 99}
    with pytest.raises(CrossmodalError, match="tabular preprocessing state version 99 is not 1"):
        TabularPreprocessor.from_state(state)


def test_a_dataframe_with_numbers_and_none_cells_reads_like_a_csv():
    data = pd.DataFrame({"x": [1.5, None, 3.0, np.nan], "c": ["a", None, "b", "a"]})
    arrays = TabularPreprocessor.fit(data, options(["x", "c"]), "DataFrame").transform(data, "DataFrame")
    assert arrays.numeric_present[:, 0].tolist() == [True, False, True, False]
    assert arrays.categorical[:, 0].tolist() == [2, 0, 3, 2]
    assert arrays.any_present().tolist() == [True, False, True, True]


def test_the_report_has_types_and_training_statistics():
    report = fit(categorical=["zip"]).report()
    assert report["price"] == {"type": "numeric", "transform": "standard", "min": -5.5, "max": 1000.0,
                               "mean": pytest.approx(256.125), "std": pytest.approx(np.std([10, 20, 1000, -5.5])),
                               "missing": 1}
    assert report["brand"] == {"type": "categorical", "categories": 2, "unknown": 0, "missing": 1,
                               "top": [["acme", 3], ["globex", 1]]}
    assert report["zip"]["categories"] == 3
    json.dumps(report)


def test_as_text_writes_columns_before_the_text():
    rows = tabular_texts(frame(price=["12.5", "", ""], brand=["acme", "new\nline", ""]), ["price", "brand"])
    assert rows == ["price: 12.5; brand: acme", "brand: new line", ""]
    assert with_tabular_text(["a red chair", "", ""], rows) == ["price: 12.5; brand: acme | a red chair",
                                                                "brand: new line", ""]
    assert with_tabular_text(None, rows) == rows


def test_batches_stack_rows_into_tensors():
    arrays = fit().transform(TRAIN, "t")
    items = [tabular_row(arrays, i) for i in (0, 2)]
    batch = collate_tabular(items)
    assert batch["numeric"].shape == (2, 2) and batch["numeric"].dtype == torch.float32
    assert batch["numeric_present"].dtype == torch.bool and batch["categorical"].dtype == torch.int64
    whole = tabular_rows(arrays, np.array([0, 2]))
    assert all(torch.equal(batch[k], whole[k]) for k in batch)
    assert isinstance(arrays, TabularArrays) and set(arrays.inputs()) == set(batch)
