"""The encoder interface: what the model, the optimizer and the checkpoint need from an encoder, declared.

    Encoder(**options from configs/encoder/MODALITY/NAME.yaml, **run-time values)
    out_dim: int                    the width D of what forward returns
    forward(x) -> Encoded           pooled [B, D], tokens [B, T, D], mask [B, T] (None = all tokens real)
    layer_groups() -> [[Parameter]] its parameters from input to output, for layer-wise learning rates
    architecture() -> dict | None   plain values that rebuild it without its pretrained files (None: its YAML does)

Every encoder subclasses `Encoder`. A user's own encoder (a `_target_` class in their code) must too: the run
refuses, at start-up and in one line, an encoder that does not (`require_encoder`), rather than guess what it
offers. Subclassing costs two lines (set `out_dim`, write `forward`); `layer_groups` (one group) and
`architecture` (None) have defaults.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from crossmodal_cli.errors import CrossmodalError


@dataclass
class Encoded:
    """One modality's encoding of a batch.

    pooled: [B, D] one vector per sample.
    tokens: [B, T, D] a sequence (image grid positions, text tokens, audio frames) for attention fusions.
    mask:   [B, T] bool, True where a token is real (text padding is False); None = all real.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None


class Encoder(nn.Module, ABC):
    """Base of every encoder: one modality's input -> `Encoded` of width `out_dim` (set it in `__init__`)."""

    out_dim: int

    @abstractmethod
    def forward(self, x: Any) -> Encoded:
        """The modality's batch (a tensor, or a dict of tensors for text) -> Encoded."""

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The parameters in groups from input to output (layer-wise learning-rate decay scales each group);
        by default one group holding them all."""
        return [list(self.parameters())]

    def architecture(self) -> dict | None:
        """Plain (JSON) values that rebuild this encoder with random weights and no pretrained file, passed back
        as the `architecture` argument; None (the default): the YAML and the run-time values alone rebuild it."""
        return None


def require_encoder(encoder: Any, where: str, target: str | None) -> Encoder:
    """`encoder` itself when it is an `Encoder`; otherwise the one-line error that says what to implement."""
    if not isinstance(encoder, Encoder):
        raise CrossmodalError(f"{where}: {target} is not a crossmodal_cli.encoders.base.Encoder; subclass it (set "
                              f"out_dim, write forward(x) -> Encoded; layer_groups and architecture are optional)")
    return encoder


def stem_blocks_rest(module: nn.Module, blocks: Iterable[nn.Module]) -> list[list[nn.Parameter]]:
    """`module`'s parameters as [stem, block 1, …, block n, rest], the order the input flows through them.

    A block's parameters form one group; a parameter in no block joins the stem when it is registered before the
    first block's parameters, else the rest. Empty groups are left out; each parameter appears once (shared ones
    too, as `module.parameters()` lists them once).
    """
    blocks = list(blocks)
    owner = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    stem: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    groups: list[list[nn.Parameter]] = [[] for _ in blocks]
    seen_block = False
    for p in module.parameters():
        if id(p) in owner:
            groups[owner[id(p)]].append(p)
            seen_block = True
        else:
            (rest if seen_block else stem).append(p)
    return [g for g in (stem, *groups, rest) if g]
