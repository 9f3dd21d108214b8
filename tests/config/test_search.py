"""configs/hparams_search/optuna.yaml: the study's direction follows the monitored metric of the configured task."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import crossmodal_cli.train  # noqa: F401  (registers cmtrain's resolvers)
from crossmodal_cli.paths import config_dir


@pytest.mark.parametrize(("overrides", "direction"), [
    ([], "maximize"),                                      # classification: val/accuracy
    (["task=regression"], "minimize"),                     # val/mae
    (["task=multilabel"], "maximize"),                     # val/map
    (["trainer.monitor=val/loss"], "minimize"),
    (["trainer.monitor=val/f1_macro", "trainer.monitor_mode=max"], "maximize"),
])
def test_the_optuna_direction_is_the_monitored_metrics(overrides, direction):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", ["hparams_search=optuna", *overrides], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "fusion", "fusion.dropout",
                                             "trainer.batch_size"}
