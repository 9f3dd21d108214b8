"""Every task exports and its bundle predicts as cmpredict does (labels, numbers within 1e-4): multi-label with its
tuned threshold, regression in the label's units, retrieval's rankings and embeddings, a multitask checkpoint's
columns. A bundle needs nothing of its run: the run folder is deleted before it predicts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from crossmodal_cli import load
from crossmodal_cli.data.colours import write_colours
from crossmodal_cli.runtime import load_bundle

from shipping import assert_same_predictions, trained_bundle

TASKS = {
    "classification": ["data.columns.label=hue"],
    "multilabel": ["task=multilabel", "data.columns.label=tags"],
    "regression": ["task=regression", "data.columns.label=value"],
    "retrieval": ["task=retrieval"],
    "multitask": ["task=multitask", "task.heads={hue:{type:classification},value:{type:regression,weight:0.5}}"],
}


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    return write_colours(folder / "train", n=96), write_colours(folder / "new", n=24, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_exports_and_predicts_as_cmpredict(colours, tmp_path, task):
    train, new = colours
    run, bundle = trained_bundle(train, tmp_path, [*TASKS[task], "modalities=[image,text]", "data.image_size=32"],
                                 on_missing="error")
    expected = assert_same_predictions(run, bundle, new, on_missing="error")
    if task == "retrieval":
        want, got = load(run, device="cpu").embed(new), load_bundle(bundle).embed(new)
        np.testing.assert_allclose(got["image"], want["embedding/image"], atol=1e-4)
        np.testing.assert_allclose(got["text"], want["embedding/text"], atol=1e-4)
    card = json.loads((bundle / "card.json").read_text())
    assert card["predicts"].startswith(task) and card["config"]["task"]["_target_"]
    shutil.rmtree(run)  # the bundle stands alone
    again = load_bundle(bundle).predict(new, on_missing="error")
    assert again.drop(columns="source").equals(expected.drop(columns="source"))
