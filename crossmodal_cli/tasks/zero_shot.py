"""Zero-shot classification with a CLIP / SigLIP model: no training, a baseline for the trained rows of cmsweep.

Each class name becomes a prompt (`template`, e.g. "a photo of a {label}"), embedded once by the text tower and
its projection into the joint space (unit vectors [C, E]). A row's image (and/or its text: `classify`) is
embedded the same way; its logits are the model's scaled cosine similarities to the C prompts [B, C] (the mean
over the classified modalities), its probabilities their softmax. The class vocabulary, targets, metrics
(accuracy, macro F1, ...) and predictions are classification's, so the run writes the same metrics.json.

The prompts' embeddings live in the head (buffers): the checkpoint is self-contained, cmeval/cmpredict need neither
the folder nor the text tower. Runs with trainer.max_epochs=0; the encoders must be one CLIP/SigLIP folder's
towers (encoder/image=clip, encoder/text=clip).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import joint_spaces
from crossmodal_cli.tasks.classification import Classification

CLASSIFIABLE = ("image", "text")


class PromptHead(nn.Module):
    """{modality: pooled [B, D_m]} -> logits [B, C]: scale x cos(pooled_m @ projection_m.T, prompt_c), averaged
    over `modalities`. Buffers: projection_m [E, D_m], prompts [C, E] (unit rows), logit_scale (a 0-d tensor)."""

    def __init__(self, in_dims: Mapping[str, int], modalities: Sequence[str], embed_dim: int, num_classes: int):
        super().__init__()
        self.modalities = list(modalities)
        for m in self.modalities:
            self.register_buffer(f"projection_{m}", torch.zeros(embed_dim, in_dims[m]))
        self.register_buffer("prompts", torch.zeros(num_classes, embed_dim))
        self.register_buffer("logit_scale", torch.zeros(()))

    def forward(self, pooled: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = [nn.functional.normalize(pooled[m].float() @ getattr(self, f"projection_{m}").T, dim=-1)
                  @ self.prompts.T for m in self.modalities]                            # each [B, C]
        return torch.stack(logits).mean(0) * self.logit_scale.exp()


class ZeroShot(Classification):
    """Classification by similarity to class-name prompts; nothing is trained (uses no fusion)."""

    uses_fusion = False

    def __init__(self, template: str, classify: Sequence[str]):
        super().__init__(label_smoothing=0.0, class_weights=None)
        if "{label}" not in template:
            raise CrossmodalError(f"task.template={template}: must contain {{label}} (where the class name goes), "
                                  f"e.g. 'a photo of a {{label}}'")
        classify = list(classify)
        if not classify or len(set(classify)) != len(classify) or not set(classify) <= set(CLASSIFIABLE):
            raise CrossmodalError(f"task.classify={classify}: a list of distinct modalities from "
                                  f"{', '.join(CLASSIFIABLE)}, e.g. [image]")
        self.template, self.classify = template, classify
        self.embed_dim: int | None = None  # the joint width, known once the prompts are embedded (or from state)

    def check(self, cfg) -> None:
        if cfg.trainer.max_epochs != 0:
            raise CrossmodalError(f"trainer.max_epochs={cfg.trainer.max_epochs}: task=zero_shot trains nothing; set "
                                  f"trainer.max_epochs=0 (task=classification fine-tunes)")
        for m in ("image", "text"):
            if m in self.classify or m == "text":
                target = cfg.encoder[m].get("_target_", "")
                if not target.startswith("crossmodal_cli.encoders.clip."):
                    raise CrossmodalError(f"encoder.{m}._target_={target}: task=zero_shot compares with the text "
                                          f"tower of a CLIP/SigLIP model; use encoder/image=clip encoder/text=clip "
                                          f"with the same encoder.*.pretrained folder")

    def modalities(self, requested: list[str] | None) -> list[str]:
        if requested is not None and sorted(requested) != sorted(self.classify):
            raise CrossmodalError(f"modalities={list(requested)}: task=zero_shot classifies task.classify="
                                  f"[{','.join(self.classify)}]; set that instead (modalities=null)")
        return list(self.classify)

    def prompts(self) -> list[str]:
        """One prompt per class: the template with the class name."""
        return [self.template.replace("{label}", name) for name in self.classes]

    def state(self) -> dict:
        return {**super().state(), "embed_dim": self.embed_dim}

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self.embed_dim = state.get("embed_dim")

    def head(self, in_dim: Mapping[str, int]) -> nn.Module:
        """{modality: width} -> PromptHead (zeros until `initialise` embeds the prompts, or a checkpoint loads)."""
        return PromptHead(in_dim, self.classify, self.embed_dim or 1, self.num_classes)

    @torch.no_grad()
    def initialise(self, model: nn.Module, embed_texts) -> bool:
        """Embed the prompts with `embed_texts` (its `encoder`: the text tower) and copy the classified towers'
        projections and the model's temperature into a new head."""
        towers = {**model.encoders, "text": embed_texts.encoder}
        spaces = joint_spaces(towers, [*self.classify, *(["text"] if "text" not in self.classify else [])],
                              "task=zero_shot")
        prompts = embed_texts(self.prompts()).float()                                   # [C, E]
        self.embed_dim = int(prompts.shape[1])
        head = PromptHead({m: e.out_dim for m, e in model.encoders.items()}, self.classify, self.embed_dim,
                          self.num_classes)
        for m in self.classify:
            getattr(head, f"projection_{m}").copy_(spaces[m].projection)
        head.prompts.copy_(prompts.cpu())
        head.logit_scale.fill_(spaces["text"].logit_scale)
        model.head = head.to(prompts.device)
        return True

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the similarity logits (reported as val/loss; nothing is trained)."""
        return {"loss": nn.functional.cross_entropy(out.logits.float(), target)}

    def describe(self) -> str:
        return f"{len(self.classes)} classes, zero-shot ('{self.template}')"
