"""Every fusion strategy exports (cmexport's core) and the bundle, with no torch in the loop, predicts exactly as
cmpredict does on image + text + audio rows, including rows with a missing modality (masked: on_missing=zero)."""
from __future__ import annotations

import json

import pytest

from shipping import assert_same_predictions, demo_csv, trained_bundle

FUSIONS = ["concat", "sum", "weighted", "product", "gated", "bilinear", "attention", "cross_attention", "late",
           "cascade"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return demo_csv(tmp_path_factory.mktemp("demo"))


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_exports_and_predicts_as_cmpredict(csv, tmp_path, fusion):
    run, bundle = trained_bundle(csv, tmp_path, [f"fusion={fusion}"])
    got = assert_same_predictions(run, bundle, csv)
    assert {"", None} & set(got["text"]) or (got["text"] == "").any()  # the row without text took part
    card = json.loads((bundle / "card.json").read_text())
    assert card["export"]["max_abs_difference"] <= 1e-4 and card["metrics"]["val"] and card["metrics"]["test"]
