"""crossmodal_cli/search/space.py: Hydra's sweep syntax as Optuna distributions, and sampled values as overrides."""
from __future__ import annotations

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.search.space import as_override, parse

D = optuna.distributions


def test_every_sweep_form_becomes_its_distribution_and_plain_values_stay_fixed():
    searched, fixed = parse({"optimizer.lr": "tag(log, interval(1e-4, 3e-3))", "fusion.dropout": "interval(0.0, 0.3)",
                             "fusion.width": "int(interval(64, 512))", "trainer.batch_size": "choice(16, 32, 64)",
                             "fusion.heads": "range(1, 9, 2)", "fusion": "choice(concat, gated)",
                             "trainer.max_epochs": "3"}, [])
    assert searched["optimizer.lr"] == D.FloatDistribution(1e-4, 3e-3, log=True)
    assert searched["fusion.dropout"] == D.FloatDistribution(0.0, 0.3)
    assert searched["fusion.width"] == D.IntDistribution(64, 512)
    assert searched["trainer.batch_size"] == D.CategoricalDistribution([16, 32, 64])
    assert searched["fusion.heads"] == D.IntDistribution(1, 7, step=2)
    assert searched["fusion"] == D.CategoricalDistribution(["concat", "gated"])
    assert fixed == ["trainer.max_epochs=3"]


def test_the_command_line_replaces_a_configured_range_and_adds_fixed_values():
    searched, fixed = parse({"fusion": "choice(concat, gated)", "optimizer.lr": "interval(0.001, 0.01)"},
                            ["fusion=sum,product", "optimizer.lr=0.003", "data.image_size=32"])
    assert searched == {"fusion": D.CategoricalDistribution(["sum", "product"])}
    assert fixed == ["optimizer.lr=0.003", "data.image_size=32"]


@pytest.mark.parametrize(("value", "message"), [
    ("interval(0.3, 0.1)", r"interval\(0.3, 0.1\) needs start < end"),
    ("tag(log, interval(0.0, 0.1))", "start > 0 on a log scale"),
])
def test_an_empty_or_impossible_range_is_one_line(value, message):
    with pytest.raises(CrossmodalError, match=message):
        parse({"optimizer.lr": value}, [])


@pytest.mark.parametrize("value", ["concat", 0.00027010527749605503, 64, "a b", "x=1", "it's"])
def test_a_sampled_value_is_an_override_hydra_reads_back_as_the_same_value(value):
    override = OverridesParser.create().parse_overrides([as_override("fusion", value)])[0]
    assert override.value() == value
