"""Encoders: one module per modality, each turning its input into an `Encoded` with a fixed `out_dim`.

Every encoder also has `layer_groups()` (its parameters in groups from input to output, for layer-wise learning
rates) and `architecture()` (plain values that rebuild it without its pretrained files, or None when its YAML
alone rebuilds it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn


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
