"""Tabular columns through real runs on the generated listings (data/tabular_demo.py): training with image +
tabular (FT-Transformer tokens into the attention fusion, modality dropout), the fitted preprocessing in the
checkpoint and data_report.json, cmeval's per-column importance, prediction with an unseen category and blank
cells, exact resume, the feature cache, the serialised-text baseline, the Python API, the exported bundle and
its server, and the data mistakes a user can make, each refused in one line."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from crossmodal_cli import load
from crossmodal_cli.config.resume import resumed_config
from crossmodal_cli.data.tabular_demo import make_tabular_data
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.evaluate import evaluate
from crossmodal_cli.exporting import export_bundle
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import check_config, train

COLUMNS = "[price,weight,brand,condition]"
FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "trainer.batch_size=16", "data.image_size=32",
        "data.text.max_length=32"]


def compose_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def tabular_run(csv: Path, *overrides: str, columns: str = COLUMNS) -> list[str]:
    return ["data=csv", f"data.csv={csv}", f"data.columns.tabular={columns}", *FAST, *overrides]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tabular")
    csv = make_tabular_data(root / "data", 240, seed=0)
    overrides = tabular_run(csv, "modalities=[image,tabular]", "encoder/tabular=ft_transformer",
                            "encoder.tabular.hidden_size=32", "encoder.tabular.num_layers=1",
                            "encoder.tabular.num_heads=4", "fusion=attention", "fusion.width=32",
                            "trainer.modality_dropout=0.3", "data.tabular.transforms={price:log}",
                            "trainer.max_epochs=2", "trainer.keep_last_k=2")
    metrics = train(compose_config("train", *overrides), root / "run")
    return {"root": root, "csv": csv, "metrics": metrics, "best": load_checkpoint(root / "run/checkpoints/best.ckpt")}


def test_the_fitted_preprocessing_is_reported_and_stored_in_the_checkpoint(run):
    report = json.loads((run["root"] / "run/data_report.json").read_text())["tabular"]
    assert [report[c]["type"] for c in ("price", "weight", "brand", "condition")] == [
        "numeric", "numeric", "categorical", "categorical"]
    assert report["price"]["transform"] == "log" and report["weight"]["transform"] == "standard"
    assert report["weight"]["missing"] > 0 and report["brand"]["categories"] >= 4
    train = pd.read_csv(run["csv"]).query("split == 'train'")
    assert report["price"]["max"] == pytest.approx(train["price"].max())
    state = run["best"]["tabular"]
    assert state["columns"] == ["price", "weight", "brand", "condition"] and state["kinds"] == report_kinds(report)
    assert run["best"]["modalities"] == ["image", "tabular"]
    counts = run["metrics"]["parameters"]["encoders"]["tabular"]
    assert counts["total"] == counts["trainable"] > 0


def report_kinds(report: dict) -> list[str]:
    return [report[c]["type"] for c in ("price", "weight", "brand", "condition")]


def test_cmeval_ranks_each_tabular_column_and_matches_training(run, tmp_path):
    ckpt = run["root"] / "run/checkpoints/best.ckpt"
    metrics = evaluate(compose_config("eval", f"ckpt={ckpt}", "trainer.num_workers=0"), tmp_path)
    assert metrics["accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])
    assert metrics["loss"] == pytest.approx(run["metrics"]["test"]["loss"], rel=1e-5)
    importance = json.loads((tmp_path / "modality_importance.json").read_text())
    assert set(importance["removed"]) == {"image", "tabular"}
    assert set(importance["columns"]) == {"price", "weight", "brand", "condition"}
    assert all(set(r["drop"]) == {"accuracy", "f1_macro"} for r in importance["columns"].values())
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert {"price", "weight", "brand", "condition", "image"} <= set(predictions.columns)


def test_prediction_maps_an_unseen_category_to_unknown_and_needs_no_training_csv(run, tmp_path, caplog):
    shutil.copytree(run["csv"].parent / "images", tmp_path / "images")
    rows = pd.read_csv(run["csv"]).query("split == 'test'").drop(columns=["label", "split"]).head(12)
    rows["image_path"] = [str(tmp_path / p) for p in rows["image_path"]]
    moved = run["root"] / "moved"
    run["csv"].parent.rename(moved)  # the training CSV and its images are gone
    try:
        model = load(run["root"] / "run", device="cpu")
        plain = model.predict(rows)
        unseen = rows.assign(brand=["newco"] * 3 + rows["brand"].tolist()[3:], weight=None)
        with caplog.at_level("INFO"):
            changed = model.predict(unseen)
    finally:
        moved.rename(run["csv"].parent)
    assert len(plain) == len(changed) == 12
    assert "test split: column 'brand': 3 values not in the training vocabulary" in caplog.text
    assert changed["brand"].tolist()[:3] == ["newco"] * 3 and (changed["weight"].fillna("") == "").all()
    probabilities = [c for c in plain.columns if c.startswith("prob_")]
    assert not np.allclose(plain[probabilities].to_numpy(), changed[probabilities].to_numpy())


def test_resume_from_an_epoch_checkpoint_is_exact(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run["root"] / "run", copy)
    cfg, state = resumed_config(str(copy / "checkpoints/epoch-001.ckpt"), [])
    train(cfg, copy, resume=state)
    a = load_checkpoint(run["root"] / "run/checkpoints/last.ckpt")
    b = load_checkpoint(copy / "checkpoints/last.ckpt")
    assert a["tabular"] == b["tabular"]
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k])
                                                          for k in a["model"])


def new_rows(run, folder: Path) -> pd.DataFrame:
    """Twelve test rows as a caller holds them (numbers as numbers, NaN blanks), images copied to `folder`, with
    an unseen brand in three rows and a blank weight in two."""
    shutil.copytree(run["csv"].parent / "images", folder / "images")
    rows = pd.read_csv(run["csv"]).query("split == 'test'").drop(columns=["label", "split"]).head(12)
    rows["image_path"] = [str(folder / p) for p in rows["image_path"]]
    rows["brand"] = ["newco"] * 3 + rows["brand"].tolist()[3:]
    rows["weight"] = [None] * 2 + rows["weight"].tolist()[2:]
    return rows.reset_index(drop=True)


def test_the_exported_bundle_predicts_as_the_checkpoint_and_serves(run, tmp_path):
    from crossmodal_cli.runtime import load_bundle
    from tests.export.shipping import request, serving

    card = export_bundle(run["root"] / "run/checkpoints/best.ckpt", tmp_path / "bundle")
    assert card["export"]["max_abs_difference"] < 1e-4
    assert {"tabular_numeric", "tabular_numeric_present", "tabular_categorical"} <= set(card["export"]["inputs"])
    assert {"price", "weight", "brand", "condition", "image_path"} <= set(card["inputs"])
    rows = new_rows(run, tmp_path)
    expected = load(run["root"] / "run", device="cpu").predict(rows)
    got = load_bundle(tmp_path / "bundle").predict(rows)
    probabilities = [c for c in expected.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probabilities].to_numpy(), expected[probabilities].to_numpy(), atol=1e-4)
    assert got["predicted"].tolist() == expected["predicted"].tolist() and got["brand"].tolist()[0] == "newco"
    with pytest.raises(CrossmodalError, match=r"DataFrame row 1: column 'price' is numeric \(so typed on the "
                                              r"training split\) but holds 'cheap'"):
        load_bundle(tmp_path / "bundle").predict(rows.assign(price=[1.5, "cheap", *rows["price"].tolist()[2:]]))

    with serving(tmp_path / "bundle") as port:
        payload = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k != "text"}
                   for row in rows.to_dict("records")]
        for row in payload:  # the server takes images as base64
            row["image_path"] = base64.b64encode(Path(row["image_path"]).read_bytes()).decode()
        status, answer = request(port, "POST", "/predict", json.dumps({"rows": payload}).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200, answer
        assert [p["predicted"] for p in answer["predictions"]] == expected["predicted"].tolist()
        payload[1]["price"] = "cheap"
        status, answer = request(port, "POST", "/predict", json.dumps({"rows": payload}).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 422 and "column 'price' is numeric" in answer["error"], answer
        assert request(port, "GET", "/health")[0] == 200  # still up


def test_the_feature_cache_gives_the_metrics_of_the_uncached_run(run, tmp_path):
    frozen = tabular_run(run["csv"], "modalities=[image,tabular]", "encoder.image.freeze=true",
                         "encoder.tabular.freeze=true", "trainer.max_epochs=2", "trainer.deterministic=true")
    plain = train(compose_config("train", *frozen), tmp_path / "plain")
    cached = train(compose_config("train", *frozen, "trainer.feature_cache=true",
                                  f"trainer.cache_dir={tmp_path / 'cache'}"), tmp_path / "cached")
    assert (tmp_path / "cache/tabular").is_dir()
    assert cached["val"]["accuracy"] == pytest.approx(plain["val"]["accuracy"])
    assert cached["val"]["loss"] == pytest.approx(plain["val"]["loss"], abs=2e-3)  # features stored as float16


def test_as_text_writes_the_columns_into_the_text(run, tmp_path):
    metrics = train(compose_config("train", *tabular_run(run["csv"], "modalities=[tabular]",
                                                          "data.tabular.as_text=true", "trainer.max_epochs=1")),
                    tmp_path / "run")
    best = load_checkpoint(tmp_path / "run/checkpoints/best.ckpt")
    assert best["modalities"] == ["text"] and best["tabular"] is None
    vocabulary = json.loads((tmp_path / "run/tokenizer/tokenizer.json").read_text())["model"]["vocab"]
    assert {"price", "brand", "acme", "refurbished"} <= set(vocabulary)
    model = load(tmp_path / "run", device="cpu")
    assert model.evaluate(run["csv"].parent / "data.csv") and "val" in metrics
    text = model.predictor.read(model.predictor.rebuilt.config.data, keep=["val"]).splits["val"]["text"].iloc[0]
    assert text.startswith("price: ") and "; brand: " in text
    from crossmodal_cli.runtime import load_bundle

    card = export_bundle(tmp_path / "run/checkpoints/best.ckpt", tmp_path / "bundle")
    assert set(card["inputs"]) == {"price", "weight", "brand", "condition"}  # the text is made of them
    rows = new_rows(run, tmp_path).drop(columns=["image_path", "text"])
    expected, got = model.predict(rows), load_bundle(tmp_path / "bundle").predict(rows)
    probabilities = [c for c in expected.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probabilities].to_numpy(), expected[probabilities].to_numpy(), atol=1e-4)


def val_word(frame: pd.DataFrame) -> pd.DataFrame:
    """The first validation row's price is a word (the column is numeric on the training split)."""
    frame.loc[frame.index[frame["split"] == "val"][0], "price"] = "n/a"
    return frame


@pytest.mark.parametrize("columns, overrides, edit, message", [
    ("[price,colour]", [], None,
     r"column 'colour' \(data.columns.tabular\) not found; the CSV has columns: image_path, text, price"),
    (COLUMNS, [], lambda f: f.assign(condition="new"),
     r"column 'condition' holds the single value 'new' in every non-blank cell of the training split"),
    (COLUMNS, [], val_word, r"data.csv: line \d+: column 'price' is numeric \(so typed on the training split\) but "
                            r"holds 'n/a'; fix the cell, or list the column in data.tabular.categorical"),
    (COLUMNS, ["data.tabular.numeric=[brand]"], None,
     r"line \d+: column 'brand' is numeric \(listed in data.tabular.numeric\) but holds '\w+'"),
    ("[price,label]", [], None, r"names 'label', which is a label column"),
    ("[]", ["modalities=[image,tabular]"], None,
     r"modalities includes tabular, but data.columns.tabular names no column"),
])
def test_data_mistakes_are_one_line_errors(run, tmp_path, columns, overrides, edit, message):
    csv = run["csv"]
    if edit is not None:
        csv = tmp_path / "data.csv"
        edit(pd.read_csv(run["csv"], keep_default_na=False, dtype=str)).to_csv(csv, index=False)
        shutil.copytree(run["csv"].parent / "images", tmp_path / "images")
    with pytest.raises(CrossmodalError, match=message):
        cfg = compose_config("train", *tabular_run(csv, "trainer.max_epochs=1", *overrides, columns=columns))
        check_config(cfg)
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run/checkpoints").exists()


def test_a_stray_word_at_prediction_time_names_its_row(run, tmp_path):
    rows = pd.read_csv(run["csv"], keep_default_na=False, dtype=str).head(6)
    rows.loc[3, "price"] = "twelve"
    path = tmp_path / "new.csv"
    rows.to_csv(path, index=False)
    shutil.copytree(run["csv"].parent / "images", tmp_path / "images")
    with pytest.raises(CrossmodalError, match=r"new.csv: line 5: column 'price' is numeric \(so typed on the "
                                              r"training split\) but holds 'twelve'"):
        load(run["root"] / "run", device="cpu").predict(path)


def test_rows_with_every_tabular_cell_blank_follow_on_missing(run, tmp_path, caplog):
    frame = pd.read_csv(run["csv"], keep_default_na=False, dtype=str)
    blank = frame.index[frame["split"] == "train"][:4]
    frame.loc[blank, ["price", "weight", "brand", "condition"]] = ""
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    shutil.copytree(run["csv"].parent / "images", tmp_path / "images")
    with pytest.raises(CrossmodalError, match=r"with unusable tabular input, e.g. line \d+: \(blank\): "
                                              r"every tabular cell blank \(fix the rows, or set data.on_missing"):
        train(compose_config("train", *tabular_run(csv, "trainer.max_epochs=1")), tmp_path / "a")
    with caplog.at_level("INFO"):
        train(compose_config("train", *tabular_run(csv, "trainer.max_epochs=1", "data.on_missing=zero")),
              tmp_path / "b")
    assert "tabular column 'price': numeric (standard), " in caplog.text
    assert "tabular column 'brand': categorical, 4 categories (top: " in caplog.text
    report = json.loads((tmp_path / "b/data_report.json").read_text())
    assert report["unusable_inputs"]["train"]["tabular"] == 4 and report["rows"]["train"] == 168
