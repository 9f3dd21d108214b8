"""Encoders built from their real YAML the way cmtrain builds them, for the tests in this folder."""
from __future__ import annotations

from omegaconf import OmegaConf

from types import SimpleNamespace

from crossmodal_cli.factory import RUNTIME_SPEC_KEYS, encoder_node, instantiate_node
from crossmodal_cli.paths import config_dir


def yaml(group: str, name: str):
    return OmegaConf.load(f"{config_dir()}/encoder/{group}/{name}.yaml")


def build(group: str, name: str, /, **values):
    """configs/encoder/GROUP/NAME.yaml built as cmtrain builds it (factory.encoder_node drops the keys the build reads
    itself; user errors come out as one-line CrossmodalError). `values` override YAML keys; the others are run-time
    values (vocab_size, sample_rate, architecture, ...)."""
    node = yaml(group, name)
    runtime = {k: v for k, v in values.items() if k not in node or k in RUNTIME_SPEC_KEYS}
    node.merge_with({k: v for k, v in values.items() if k in node and k not in RUNTIME_SPEC_KEYS})
    cfg = SimpleNamespace(encoder={group: OmegaConf.to_container(node, resolve=True)},
                          data=SimpleNamespace(image_size=None, resize=None))
    return instantiate_node(encoder_node(cfg, group)[0], f"encoder/{group}", **runtime)
