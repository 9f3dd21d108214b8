"""MultimodalModel: one encoder per modality, a fusion, a task head: `encode()`, `fuse()`, `head_outputs()`.

A task that works on the encoders' pooled outputs itself (retrieval's two towers) builds it with `fusion=None`:
`fuse()` then gives {modality: pooled [B, D_m]} to the head.

The split lets a frozen encoder's outputs be computed once and cached (`features.py`): with `from_features`, the
batch holds `Encoded` fields instead of raw inputs and `forward` skips the encoders.
"""
from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.encoders import Encoded, Encoder
from crossmodal_cli.fusion import Fused, Fusion

log = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """logits [B, C]; aux_logits {modality: [B, C]} from fusions with unimodal branches, weighted by aux_weight."""

    logits: torch.Tensor
    aux_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_weight: float = 0.0


@dataclass(frozen=True)
class Transfer:
    """How one encoder is fine-tuned: frozen (eval mode, no gradients) until `unfreeze_at_epoch` (None = for the
    whole run when frozen), its learning rate times `lr_scale`, and layer-wise decay: the group k steps below the
    encoder's top trains at lr x lr_scale x layer_decay**k."""

    freeze: bool = False
    unfreeze_at_epoch: int | None = None
    lr_scale: float = 1.0
    layer_decay: float = 1.0


class EpochScheduled(ABC):
    """A model whose set-up follows the epoch (gradual unfreezing of encoders): the training loop calls
    `set_epoch(epoch)` at the start of every epoch of a model that declares this; any other module has none."""

    @abstractmethod
    def set_epoch(self, epoch: int) -> object:
        """Apply the schedule for `epoch` (1-based)."""


class MultimodalModel(nn.Module, EpochScheduled):
    """inputs {modality: tensor or dict of tensors}, present {modality: bool [B]} -> ModelOutput.

    Encoders map each modality to an Encoded; the fusion combines them into [B, fusion.out_dim] (no fusion: the
    pooled outputs {modality: [B, D_m]} go on as they are); the head maps that to the task's outputs. During training, `modality_dropout` hides each modality of each sample with that
    probability (never all of a sample's modalities), so the model learns to cope with missing inputs. Frozen
    encoders stay in eval mode (BatchNorm statistics untouched) and run under `torch.no_grad`.
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion | None, head: nn.Module,
                 modality_dropout: float = 0.0, transfer: Mapping[str, Transfer] | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modality_dropout = modality_dropout
        self.transfer = {m: (transfer or {}).get(m, Transfer()) for m in self.encoders}
        self.frozen: set[str] = set()
        self.from_features = False  # True: inputs are cached Encoded fields (features.py)
        for m, policy in self.transfer.items():
            if policy.freeze:
                self.set_frozen(m, True)

    def parameter_counts(self) -> dict:
        """Parameter counts, for logs and metrics.json: {"total", "trainable", "encoder/MODALITY", "fusion", "head",
        "encoders": {MODALITY: {"total", "trainable"}}}. Trainable = requires_grad now: a frozen encoder's are
        not, an encoder with adapters only its adapters' (its base weights stay fixed)."""
        counts = {f"encoder/{m}": _count(e) for m, e in self.encoders.items()}
        counts.update(fusion=_count(self.fusion) if self.fusion is not None else 0, head=_count(self.head))
        encoders = {m: {"total": _count(e), "trainable": _count(e, trainable=True)} for m, e in self.encoders.items()}
        return {"total": _count(self), "trainable": _count(self, trainable=True), **counts, "encoders": encoders}

    # ---- transfer learning -----------------------------------------------------------------------------------

    def set_frozen(self, modality: str, frozen: bool) -> None:
        for p in self.encoders[modality].parameters():
            p.requires_grad_(not frozen)
        (self.frozen.add if frozen else self.frozen.discard)(modality)
        self.train(self.training)

    def set_epoch(self, epoch: int) -> list[str]:
        """Apply the unfreezing schedule for `epoch` (1-based); returns the modalities unfrozen now or before."""
        for m, policy in self.transfer.items():
            if policy.freeze and policy.unfreeze_at_epoch is not None:
                frozen = epoch < policy.unfreeze_at_epoch
                if m in self.frozen and not frozen:
                    log.info("epoch %d: encoder %s unfrozen (encoder.%s.unfreeze_at_epoch=%d)", epoch, m, m,
                             policy.unfreeze_at_epoch)
                self.set_frozen(m, frozen)
        return [m for m in self.encoders if m not in self.frozen]

    def train(self, mode: bool = True) -> "MultimodalModel":
        super().train(mode)
        for m in self.frozen:
            self.encoders[m].eval()
        return self

    def parameter_groups(self) -> list[dict]:
        """[{"params", "lr_scale", "name"}]: one group per encoder layer group (scaled by the encoder's lr_scale
        and layer decay, top group = 1) and one for fusion + head; every parameter once, frozen ones included (so
        unfreezing needs no new optimizer)."""
        groups = []
        for m, encoder in self.encoders.items():
            policy = self.transfer[m]
            layers = encoder.layer_groups()
            for depth, params in enumerate(reversed(layers)):
                groups.append({"params": params, "lr_scale": policy.lr_scale * policy.layer_decay ** depth,
                               "name": f"encoder/{m}/{len(layers) - 1 - depth}"})
        fusion = list(self.fusion.parameters()) if self.fusion is not None else []
        groups.append({"params": [*fusion, *self.head.parameters()], "lr_scale": 1.0,
                       "name": "fusion+head"})
        return groups

    # ---- forward ---------------------------------------------------------------------------------------------

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, Encoded]:
        """{modality: Encoded} from raw inputs (or, with from_features, from cached Encoded fields)."""
        if self.from_features:
            return {m: Encoded(pooled=inputs[m]["pooled"], tokens=inputs[m]["tokens"], mask=inputs[m]["mask"])
                    for m in self.encoders}
        encoded = {}
        for m, encoder in self.encoders.items():
            with torch.no_grad() if m in self.frozen else contextlib.nullcontext():
                encoded[m] = encoder(inputs[m])
        return encoded

    def fuse(self, encoded: Mapping[str, Encoded],
             present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | Fused | dict[str, torch.Tensor]:
        """Modality dropout (training), then the fusion: the fused features [B, D] (a `Fused` when the fusion also
        has per-modality features; {modality: pooled [B, D_m]} for a model without fusion), what the task's head
        reads and what cmpredict's embeddings keep."""
        if self.training and self.modality_dropout > 0 and len(self.encoders) > 1:
            if present is None:
                first = next(iter(encoded.values())).pooled
                present = {m: torch.ones(first.shape[0], dtype=torch.bool, device=first.device) for m in self.encoders}
            present = self._drop_modalities(dict(present))
        if self.fusion is None:
            return {m: e.pooled for m, e in encoded.items()}
        return self.fusion(encoded, present)

    def head_outputs(self, fused: torch.Tensor | Fused) -> ModelOutput:
        """The task's head on the fused features (and on each modality's, for fusions with unimodal branches)."""
        if not isinstance(fused, Fused):
            return ModelOutput(self.head(fused))
        aux = {m: self.head(f) for m, f in fused.per_modality.items()}
        return ModelOutput(self.head(fused.features), aux, fused.aux_weight)

    def forward(self, inputs: Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor] | None = None) -> ModelOutput:
        """head(fuse(encode(inputs)))."""
        return self.head_outputs(self.fuse(self.encode(inputs), present))

    def _drop_modalities(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = sorted(present)
        keep = torch.stack([present[m] for m in names], dim=1)                    # [B, M]
        dropped = keep & (torch.rand(keep.shape, device=keep.device) >= self.modality_dropout)
        rescue = dropped.sum(1, keepdim=True) == 0                                # keep the original row instead
        final = torch.where(rescue, keep, dropped)
        return {m: final[:, i] for i, m in enumerate(names)}


def _count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
