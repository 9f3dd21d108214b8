"""Image–text retrieval: each row is a matching (image, text) pair; no label column.

Two towers, no fusion (as CLIP, Radford et al. 2021): the image and text encoders' pooled outputs are each
projected to `embed_dim` and L2-normalised; the loss is the symmetric InfoNCE over the batch (every other row's
text is a negative for an image and vice versa) with a learned temperature (logit scale initialised to
1/`temperature`, clamped at 100 as in CLIP). Metrics rank every text of the split for every image (image→text) and
every image for every text (text→image): recall@1/5/10 and the median rank of the true match (1 = first), over the
whole validation or test split, not per batch. `recall_mean` (the mean of the six recalls) is monitored.

The split is random (seeded); rows are not stratified. A row needs both its image and its text: keep
data.on_missing=error or drop (with `zero`, a blank input would be paired with a caption).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd
import torch
import torchmetrics
from torch import nn

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task

KS = (1, 5, 10)
MODALITIES = ["image", "text"]


class Towers(nn.Module):
    """{image: [B, D_i], text: [B, D_t]} -> [B, 2, E]: both projected, L2-normalised, times sqrt(learned logit
    scale), stacked (image first). So image @ text.T is the scaled cosine similarity the loss needs, and the
    ranking (what every metric and prediction reads) is that of the cosine similarity."""

    def __init__(self, in_dims: Mapping[str, int], embed_dim: int, temperature: float):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(in_dims[m], embed_dim) for m in MODALITIES})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def forward(self, pooled: Mapping[str, torch.Tensor]) -> torch.Tensor:
        root = self.logit_scale.clamp(max=math.log(100)).div(2).exp()
        return torch.stack([nn.functional.normalize(self.proj[m](pooled[m]).float(), dim=-1) * root
                            for m in MODALITIES], 1)


class RetrievalRanks(torchmetrics.Metric):
    """Recall@k and median rank over a whole split. update(embeddings [B, 2, E], _); compute() ranks every row's
    true match among all rows (torchmetrics' retrieval metrics score per-query candidate lists, which would need
    the N x N pairs materialised as index lists; here one N x N similarity matrix is enough)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, target: torch.Tensor | None = None) -> None:
        self.embeddings.append(embeddings.float())

    def compute(self) -> dict[str, torch.Tensor]:
        both = torch.cat(self.embeddings) if isinstance(self.embeddings, list) else self.embeddings
        similarity = both[:, 0] @ both[:, 1].T                                      # [N images, N texts]
        results = {}
        for name, sim in (("i2t", similarity), ("t2i", similarity.T)):
            true = sim.diagonal().unsqueeze(1)
            ranks = (sim > true).sum(1) + 1                                          # 1 = the match comes first
            for k in KS:
                results[f"{name}_r{k}"] = (ranks <= k).float().mean()
            results[f"{name}_median_rank"] = ranks.float().median()
        results["recall_mean"] = torch.stack([results[f"{n}_r{k}"] for n in ("i2t", "t2i") for k in KS]).mean()
        return results


class Retrieval(Task):
    """Matching image–text pairs; CLIP-style two towers and symmetric InfoNCE; recall@k over the whole split."""

    monitor = "recall_mean"
    uses_fusion = False  # the towers read the encoders' pooled outputs: the model has no fusion

    def __init__(self, embed_dim: int = 256, temperature: float = 0.07):
        self.embed_dim, self.temperature = embed_dim, temperature

    def label_columns(self, columns: Mapping[str, Any]) -> dict[str, str]:
        return {}

    def check(self, cfg) -> None:
        if cfg.trainer.modality_dropout > 0:
            raise CrossmodalError(f"trainer.modality_dropout={cfg.trainer.modality_dropout}: task=retrieval has no "
                                  f"fusion to train with missing modalities; set trainer.modality_dropout=0")
        if cfg.data.on_missing == "zero":
            raise CrossmodalError("data.on_missing=zero: task=retrieval would pair a blank input with a caption; use "
                                  "data.on_missing=error or drop")

    def modalities(self, requested: list[str] | None) -> list[str]:
        if requested is not None and sorted(requested) != sorted(MODALITIES):
            raise CrossmodalError(f"modalities={list(requested)}: task=retrieval pairs images with texts; use "
                                  f"modalities=[image,text] (or null)")
        return list(MODALITIES)

    def targets(self, frame: pd.DataFrame, split: str, on_missing: str,
                headers: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
        frame = frame.copy()
        frame["target"] = range(len(frame))  # the row itself is the match
        return frame, 0

    def describe(self) -> str:
        return "image-text pairs (retrieval)"

    def head(self, in_dim: Mapping[str, int]) -> nn.Module:
        """{modality: width} -> Towers: the model has no fusion, its head reads the pooled outputs."""
        return Towers(in_dim, self.embed_dim, self.temperature)

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings = out.logits                                                     # [B, 2, E]
        logits = embeddings[:, 0] @ embeddings[:, 1].T                              # [B images, B texts], scaled
        match = torch.arange(len(logits), device=logits.device)
        return {"loss": (nn.functional.cross_entropy(logits, match) +
                         nn.functional.cross_entropy(logits.T, match)) / 2}

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({"ranks": RetrievalRanks()})

    def metric_names(self) -> list[str]:
        return [f"{n}_r{k}" for n in ("i2t", "t2i") for k in KS] + ["i2t_median_rank", "t2i_median_rank",
                                                                     "recall_mean"]

    def outputs(self, out) -> torch.Tensor:
        return out.logits.float()

    def embeddings(self, out) -> dict[str, torch.Tensor]:
        unit = nn.functional.normalize(out.logits.float(), dim=-1)
        return {"embedding/image": unit[:, 0], "embedding/text": unit[:, 1]}

    def predictions(self, outputs: torch.Tensor, frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
        """Per row: the CSV lines of the top-k texts for its image and of the top-k images for its text, and the
        rank of its own match in each direction."""
        similarity = outputs[:, 0] @ outputs[:, 1].T
        lines = frame["line"].to_numpy()
        columns = {}
        for name, sim in (("image_to_text", similarity), ("text_to_image", similarity.T)):
            top = sim.topk(min(k, len(sim)), dim=1).indices.numpy()
            columns[f"{name}_top{k}_lines"] = ["|".join(str(lines[j]) for j in row) for row in top]
            columns[f"{name}_rank"] = ((sim > sim.diagonal().unsqueeze(1)).sum(1) + 1).numpy()
        return pd.DataFrame(columns)

    def higher_is_better(self, metric: str) -> bool:
        return not (metric == "loss" or metric.endswith("median_rank"))
