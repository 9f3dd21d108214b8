"""Every encoder YAML builds an `Encoder` (encoders/base.py), the interface the model and the factory rely on."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from crossmodal_cli.encoders import Encoded, Encoder
from crossmodal_cli.paths import config_dir
from clip_folders import SPECIAL, WORDS, tiny_folder
from yaml_encoders import build

TEXT_RUNTIME = {"vocab_size": 30522, "max_length": 32, "pad_token_id": 0}
RUNTIME = {"image": {}, "text": TEXT_RUNTIME, "audio": {"sample_rate": 16000},
           "tabular": {"numeric_columns": 3, "cardinalities": [4, 6]}}
YAMLS = sorted((p.parent.name, p.stem) for p in (Path(config_dir()) / "encoder").glob("*/*.yaml"))


def test_the_yaml_list_is_complete():
    assert {g for g, _ in YAMLS} == {"image", "text", "audio", "tabular"} and len(YAMLS) >= 13


@pytest.mark.parametrize("group, name", YAMLS, ids=[f"{g}/{n}" for g, n in YAMLS])
def test_every_encoder_yaml_builds_an_encoder(group, name, minilm_folder, wav2vec2_folder, tmp_path):
    if name == "timm":
        pytest.importorskip("timm")
    if name == "clip":
        tiny_folder(tmp_path / "clip")
    sources = {"text/hf": {"pretrained": minilm_folder}, "audio/hf": {"pretrained": wav2vec2_folder[0]},
               "image/torchvision": {"name": "resnet18"}, "image/timm": {"name": "resnet18"},
               "image/clip": {"pretrained": str(tmp_path / "clip")},
               "text/clip": {"pretrained": str(tmp_path / "clip"), "vocab_size": len(SPECIAL + WORDS),
                             "max_length": 16}}
    encoder = build(group, name, **{**RUNTIME[group], **sources.get(f"{group}/{name}", {})})
    assert isinstance(encoder, Encoder) and isinstance(encoder.out_dim, int) and encoder.out_dim > 0
    arch = encoder.architecture()
    assert arch is None or isinstance(arch, dict)


def test_the_defaults_are_one_group_and_no_architecture():
    class Mean(Encoder):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3)
            self.out_dim = 3

        def forward(self, x):
            tokens = self.proj(x)
            return Encoded(pooled=tokens.mean(1), tokens=tokens)

    encoder = Mean()
    assert encoder.layer_groups() == [list(encoder.parameters())] and encoder.architecture() is None


def test_an_encoder_without_forward_cannot_be_made():
    class NoForward(Encoder):
        out_dim = 3

    with pytest.raises(TypeError, match="forward"):
        NoForward()
