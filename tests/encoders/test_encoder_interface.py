"""What every encoder offers besides forward: layer groups, architecture(), YAMLs the start-up checker accepts."""
from __future__ import annotations

import json
import typing

import pytest
import torch
from omegaconf import OmegaConf

from crossmodal_cli.config.check import Target, check_target
from crossmodal_cli.settings.run import EncoderSettings
from crossmodal_cli.errors import CrossmodalError
from yaml_encoders import build, yaml

TEXT_RUNTIME = {"vocab_size": 30522, "max_length": 32, "pad_token_id": 0}


@pytest.fixture
def sources(minilm_folder, wav2vec2_folder) -> dict[str, dict]:
    """Overrides that make each YAML buildable here (a local folder for `pretrained: ???`)."""
    return {"text/hf": {"pretrained": minilm_folder, **TEXT_RUNTIME},
            "audio/hf": {"pretrained": wav2vec2_folder[0], "sample_rate": 16000},
            "image/torchvision": {"name": "resnet18"}, "image/timm": {"name": "resnet18"}}


ENCODERS = [("image", "tiny_cnn", {}), ("image", "resnet18", {}), ("image", "torchvision", {}),
            ("image", "timm", {}), ("text", "tiny_bert", TEXT_RUNTIME), ("text", "bert_small", TEXT_RUNTIME),
            ("text", "hf", {}), ("audio", "mel_cnn", {"sample_rate": 16000}), ("audio", "hf", {})]


@pytest.mark.parametrize("group, name, runtime", ENCODERS, ids=[f"{g}/{n}" for g, n, _ in ENCODERS])
def test_layer_groups_cover_every_parameter_exactly_once_from_input_to_output(group, name, runtime, sources):
    if name == "timm":
        pytest.importorskip("timm")
    encoder = build(group, name, **{**runtime, **sources.get(f"{group}/{name}", {})})
    groups = encoder.layer_groups()
    flat = [id(p) for g in groups for p in g]
    assert len(groups) >= 3 and all(groups)
    assert len(flat) == len(set(flat)) and set(flat) == {id(p) for p in encoder.parameters()}
    names = {id(p): n for n, p in encoder.named_parameters()}
    first, last = names[id(groups[0][0])], names[id(groups[-1][-1])]
    assert any(part in first for part in ("embed", "body.0.", "norm.", "conv1", "feature_extractor", "stem",
                                          "masked_spec_embed")), first
    assert not any(part in last for part in ("embed", "conv1", "stem")), last


@pytest.mark.parametrize("group, name", [("image", "tiny_cnn"), ("image", "resnet18"), ("text", "tiny_bert"),
                                         ("audio", "mel_cnn")])
def test_encoders_built_from_their_yaml_have_no_architecture(group, name):
    runtime = {"text": TEXT_RUNTIME, "audio": {"sample_rate": 16000}}.get(group, {})
    assert build(group, name, **runtime).architecture() is None


def test_old_encoders_keep_their_parameter_names():
    """Checkpoints written before the pretrained encoders must still load."""
    assert "body.0.weight" in build("image", "tiny_cnn").state_dict()
    assert "body.4.0.conv1.weight" in build("image", "resnet18").state_dict()
    assert "bert.encoder.layer.1.output.dense.weight" in build("text", "tiny_bert", **TEXT_RUNTIME).state_dict()
    assert {"norm.weight", "body.0.weight"} <= set(build("audio", "mel_cnn", sample_rate=16000).state_dict())


@pytest.mark.parametrize("group, name", [("image", "torchvision"), ("image", "timm"), ("text", "hf"),
                                         ("audio", "hf")])
def test_new_yamls_pass_the_start_up_checker(group, name, sources):
    """Their keys are parameters of the target (or keys the build reads), typed as the checker expects."""
    target = next(m for m in typing.get_type_hints(EncoderSettings, include_extras=True)[group].__metadata__
                  if isinstance(m, Target))
    node = OmegaConf.to_container(yaml(group, name))
    if "pretrained" in node:
        node["pretrained"] = sources[f"{group}/{name}"]["pretrained"]
    check_target(f"encoder.{group}", node, target)
    bad = dict(node, **({"weights": 3} if group == "image" else {"pretrained": 3}))
    with pytest.raises(CrossmodalError, match=r"encoder\.%s\.(weights|pretrained)=3: must be" % group):
        check_target(f"encoder.{group}", bad, target)


def test_pretrained_yamls_require_a_folder():
    assert OmegaConf.is_missing(yaml("text", "hf"), "pretrained")
    assert OmegaConf.is_missing(yaml("audio", "hf"), "pretrained")


def test_meta_device_dry_build_checks_files_without_reading_them(tmp_path, sources):
    """build.check_buildable instantiates under torch.device("meta"): a missing file still fails there."""
    with torch.device("meta"):
        encoder = build("audio", "hf", **sources["audio/hf"])
        assert encoder.model.encoder.layers[0].attention.q_proj.weight.is_meta
        with pytest.raises(CrossmodalError, match="no such file"):
            build("image", "torchvision", name="resnet18", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("group", ["text", "audio"])
def test_architecture_round_trip_through_instantiate(group, sources, minilm_tokenizer):
    """As cmeval rebuilds from a checkpoint: the stored architecture (JSON) as a run-time value through Hydra's
    instantiate (which hands it over as a DictConfig), a pretrained folder that no longer exists."""
    values = sources[f"{group}/hf"]
    encoder = build(group, "hf", **values).eval()
    stored = json.loads(json.dumps(encoder.architecture()))
    rebuilt = build(group, "hf", **{**values, "pretrained": "/gone/model", "architecture": stored}).eval()
    assert rebuilt.architecture() == stored
    rebuilt.load_state_dict(encoder.state_dict())
    if group == "text":
        batch = minilm_tokenizer(["a guitar", "the market fell"], padding=True, return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    else:
        inputs = torch.randn(2, 3200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs).pooled, encoder(inputs).pooled)
