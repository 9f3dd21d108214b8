"""MultimodalModel: one encoder per modality, a fusion, a task head; nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from crossmodal_cli.fusion import Fused


@dataclass
class ModelOutput:
    """logits [B, C]; aux_logits {modality: [B, C]} from fusions with unimodal branches, weighted by aux_weight."""

    logits: torch.Tensor
    aux_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_weight: float = 0.0


class MultimodalModel(nn.Module):
    """inputs {modality: tensor or dict of tensors}, present {modality: bool [B]} -> ModelOutput.

    Encoders map each modality to an Encoded; the fusion combines them into [B, fusion.out_dim]; the head maps
    that to the task's outputs. During training, `modality_dropout` hides each modality of each sample with that
    probability (never all of a sample's modalities), so the model learns to cope with missing inputs.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: nn.Module, head: nn.Module,
                 modality_dropout: float = 0.0):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modality_dropout = modality_dropout

    def parameter_counts(self) -> dict[str, int]:
        """{"total", "encoder/MODALITY", "fusion", "head"}: parameter counts, for logs and metrics.json."""
        counts = {f"encoder/{m}": _count(e) for m, e in self.encoders.items()}
        counts.update(fusion=_count(self.fusion), head=_count(self.head))
        return {"total": _count(self), **counts}

    def _drop_modalities(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = sorted(present)
        keep = torch.stack([present[m] for m in names], dim=1)                    # [B, M]
        dropped = keep & (torch.rand(keep.shape, device=keep.device) >= self.modality_dropout)
        rescue = dropped.sum(1, keepdim=True) == 0                                # keep the original row instead
        final = torch.where(rescue, keep, dropped)
        return {m: final[:, i] for i, m in enumerate(names)}

    def forward(self, inputs: Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor] | None = None) -> ModelOutput:
        encoded = {m: encoder(inputs[m]) for m, encoder in self.encoders.items()}
        if self.training and self.modality_dropout > 0 and len(self.encoders) > 1:
            if present is None:
                batch = next(iter(encoded.values())).pooled.shape[0]
                device = next(iter(encoded.values())).pooled.device
                present = {m: torch.ones(batch, dtype=torch.bool, device=device) for m in self.encoders}
            present = self._drop_modalities(dict(present))
        fused = self.fusion(encoded, present)
        if not isinstance(fused, Fused):
            return ModelOutput(self.head(fused))
        aux = {m: self.head(f) for m, f in fused.per_modality.items()}
        return ModelOutput(self.head(fused.features), aux, fused.aux_weight)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
