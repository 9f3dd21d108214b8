"""The tabular encoders (TabularMLP, FTTransformer): shapes with and without each kind of column, the learned
missing embedding, gradients, layer groups, checkpointing and adapters, their YAMLs, and a tiny training that
learns a numeric threshold combined with a categorical rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from crossmodal_cli.encoders.base import Encoder
from crossmodal_cli.encoders.tabular import FTTransformer, TabularMLP
from crossmodal_cli.errors import CrossmodalError
from yaml_encoders import build

SMALL = {TabularMLP: {"embedding_dim": 8, "hidden_size": 32, "num_layers": 2, "dropout": 0.0},
         FTTransformer: {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "ffn_factor": 1.33, "dropout": 0.0}}
ENCODERS = list(SMALL)
LAYOUTS = [(3, [5, 4]), (0, [5]), (2, []), (1, [3, 7, 4])]


def make(cls, numeric_columns, cardinalities, **kw) -> Encoder:
    torch.manual_seed(0)
    return cls(numeric_columns=numeric_columns, cardinalities=cardinalities, **{**SMALL[cls], **kw})


def inputs(batch, numeric_columns, cardinalities, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    categorical = [torch.randint(0, c, (batch,), generator=g) for c in cardinalities]
    return {"numeric": torch.randn(batch, numeric_columns, generator=g),
            "numeric_present": torch.rand(batch, numeric_columns, generator=g) > 0.3,
            "categorical": torch.stack(categorical, 1) if categorical else torch.zeros(batch, 0, dtype=torch.long)}


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize("numeric_columns, cardinalities", LAYOUTS)
def test_shapes_with_or_without_each_kind_of_column(cls, numeric_columns, cardinalities):
    encoder = make(cls, numeric_columns, cardinalities)
    out = encoder(inputs(6, numeric_columns, cardinalities))
    tokens = 1 if cls is TabularMLP else numeric_columns + len(cardinalities)
    assert out.pooled.shape == (6, encoder.out_dim) and out.tokens.shape == (6, tokens, encoder.out_dim)
    assert out.mask is None and torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("cls", ENCODERS)
def test_no_columns_at_all_is_one_line(cls):
    with pytest.raises(CrossmodalError, match="no tabular columns; name them in data.columns.tabular"):
        make(cls, 0, [])


@pytest.mark.parametrize("cls", ENCODERS)
def test_an_absent_value_uses_the_missing_embedding(cls):
    encoder = make(cls, 2, [4]).eval()
    x = {"numeric": torch.tensor([[0.0, 1.0], [0.0, 1.0], [7.0, 1.0]]),
         "numeric_present": torch.tensor([[True, True], [False, True], [False, True]]),
         "categorical": torch.tensor([[2], [2], [2]])}
    pooled = encoder(x).pooled
    assert not torch.allclose(pooled[0], pooled[1])  # a blank is not the number 0
    assert torch.allclose(pooled[1], pooled[2])     # and the value under a blank is never read
    with torch.no_grad():
        encoder.embed.missing[0] += torch.randn(encoder.embed.dim, generator=torch.Generator().manual_seed(1))
    changed = encoder(x).pooled
    assert torch.allclose(changed[0], pooled[0]) and not torch.allclose(changed[1], pooled[1])


@pytest.mark.parametrize("cls", ENCODERS)
def test_blank_and_unknown_categories_have_their_own_rows(cls):
    encoder = make(cls, 0, [5, 3]).eval()
    ids = torch.tensor([[0, 2], [1, 2], [2, 2], [2, 0]])
    pooled = encoder({"numeric": torch.zeros(4, 0), "numeric_present": torch.zeros(4, 0, dtype=torch.bool),
                      "categorical": ids}).pooled
    assert len({tuple(p.round(decimals=5).tolist()) for p in pooled}) == 4


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize("numeric_columns, cardinalities", LAYOUTS)
def test_gradients_reach_every_parameter(cls, numeric_columns, cardinalities):
    encoder = make(cls, numeric_columns, cardinalities)
    out = encoder(inputs(16, numeric_columns, cardinalities))
    (out.pooled.square().sum() + out.tokens.square().sum()).backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", ENCODERS)
def test_layer_groups_hold_every_parameter_once_input_first(cls):
    encoder = make(cls, 2, [4])
    groups = encoder.layer_groups()
    flat = [id(p) for g in groups for p in g]
    assert sorted(flat) == sorted(id(p) for p in encoder.parameters()) and len(set(flat)) == len(flat)
    assert len(groups) >= 3 and any(p is encoder.embed.weight for p in groups[0])


@pytest.mark.parametrize("cls", ENCODERS)
def test_gradient_checkpointing_keeps_outputs_and_gradients(cls):
    plain, checkpointed = make(cls, 2, [4]), make(cls, 2, [4])
    checkpointed.enable_gradient_checkpointing()
    x = inputs(8, 2, [4])
    grads = []
    for encoder in (plain, checkpointed):
        out = encoder(x).pooled
        out.sum().backward()
        grads.append(out.detach())
    assert torch.allclose(*grads, atol=1e-6)
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize("cls", ENCODERS)
def test_adapters_find_default_targets_and_start_as_the_identity(cls):
    pytest.importorskip("peft")
    from crossmodal_cli.encoders.adapters import add_adapters

    encoder = make(cls, 2, [4]).eval()
    x = inputs(4, 2, [4])
    before = encoder(x).pooled
    add_adapters(encoder, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None, "method": "lora"},
                 "encoder.tabular.lora")
    assert torch.allclose(encoder(x).pooled, before, atol=1e-6)
    assert any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("name", ["mlp", "ft_transformer"])
def test_the_yamls_build_encoders(name):
    encoder = build("tabular", name, numeric_columns=3, cardinalities=[4, 6])
    assert isinstance(encoder, Encoder) and encoder.architecture() is None
    out = encoder.eval()(inputs(2, 3, [4, 6]))
    assert out.pooled.shape == (2, encoder.out_dim)


def _rule_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """label = (x0 > 0.5) XOR (category in {2, 3}); x1 is noise, blank in a fifth of the rows; a tenth of the
    categories are blank (id 0, then the label follows the threshold alone)."""
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, 2, generator=g)
    present = torch.ones(n, 2, dtype=torch.bool)
    present[:, 1] = torch.rand(n, generator=g) > 0.2
    category = torch.randint(2, 6, (n,), generator=g)
    category[torch.rand(n, generator=g) < 0.1] = 0
    label = ((numeric[:, 0] > 0.5) ^ ((category == 2) | (category == 3))).long()
    return {"numeric": numeric * present, "numeric_present": present, "categorical": category[:, None]}, label


@pytest.mark.parametrize("cls", ENCODERS)
def test_a_tiny_training_learns_a_threshold_and_a_category_rule(cls):
    torch.manual_seed(0)
    encoder = make(cls, 2, [6])
    model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(encoder.out_dim, 2)})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = _rule_data(1024, seed=1)
    for step in range(250):
        rows = torch.randint(0, len(y), (128,), generator=torch.Generator().manual_seed(step))
        logits = model["head"](encoder({k: v[rows] for k, v in x.items()}).pooled)
        loss = nn.functional.cross_entropy(logits, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_x, test_y = _rule_data(1000, seed=2)
    model.eval()
    with torch.no_grad():
        accuracy = (model["head"](encoder(test_x).pooled).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.85  # chance: about 0.5
