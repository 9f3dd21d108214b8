"""Image–text retrieval: each row is a matching (image, text) pair; no label column.

Two towers, no fusion (as CLIP, Radford et al. 2021): the image and text encoders' pooled outputs are each
projected to `embed_dim` and L2-normalised; the loss is the symmetric InfoNCE over the batch (every other row's
text is a negative for an image and vice versa) with a learned temperature (logit scale initialised to
1/`temperature`, clamped at 100 as in CLIP), or SigLIP's sigmoid loss (Zhai et al. 2023: every image-text pair of
the batch a binary match / no-match, with a learned temperature and bias). Metrics rank every text of the split
for every image (image→text) and every image for every text (text→image): recall@1/5/10 and the median rank of the
true match (1 = first), over the whole validation or test split, not per batch. `recall_mean` (the mean of the six
recalls) is monitored.

With both encoders the towers of one CLIP / SigLIP folder (encoders/clip.py), `init_from_encoders` starts the
towers from the checkpoint's own joint space: its projections (CLIP's visual_projection / text_projection, SigLIP's
identity), temperature and bias, so before any training (trainer.max_epochs=0) the recalls are the pretrained
model's; `loss: auto` then takes the loss the model was trained with. What the encoders decided (the joint width,
the loss) is the task's state, stored in the checkpoint.

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

from crossmodal_cli.encoders.clip import JointSpace
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task, joint_spaces

KS = (1, 5, 10)
LOSSES = ("infonce", "sigmoid", "auto")
MODALITIES = ["image", "text"]


class Towers(nn.Module):
    """{image: [B, D_i], text: [B, D_t]} -> [B, 2, E]: both projected, L2-normalised, times sqrt(learned logit
    scale), stacked (image first). So image @ text.T is the scaled cosine similarity the loss needs, and the
    ranking (what every metric and prediction reads) is that of the cosine similarity.

    With the sigmoid loss (`bias` not None) the output is [B, 2, E + 1]: a last coordinate 1 for the image and the
    learned bias for the text, so image @ text.T = scale x cosine + bias, the sigmoid loss's logits; the task
    drops that coordinate for metrics and predictions (a constant shift leaves every ranking as it is). The scale is
    clamped at 100 for InfoNCE (CLIP), not for the sigmoid loss (SigLIP's trained scale exceeds it)."""

    def __init__(self, in_dims: Mapping[str, int], embed_dim: int, temperature: float, bias: float | None = None):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(in_dims[m], embed_dim) for m in MODALITIES})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    @torch.no_grad()
    def start_from(self, spaces: Mapping[str, JointSpace]) -> None:
        """Copy the joint space of a pretrained model: each projection [E, D_m] (bias 0), its scale and bias."""
        for m in MODALITIES:
            self.proj[m].weight.copy_(spaces[m].projection)
            self.proj[m].bias.zero_()
        self.logit_scale.fill_(spaces["image"].logit_scale)
        if self.logit_bias is not None and spaces["image"].logit_bias is not None:
            self.logit_bias.fill_(spaces["image"].logit_bias)

    def forward(self, pooled: Mapping[str, torch.Tensor]) -> torch.Tensor:
        scale = self.logit_scale if self.logit_bias is not None else self.logit_scale.clamp(max=math.log(100))
        root = scale.div(2).exp()
        both = torch.stack([nn.functional.normalize(self.proj[m](pooled[m]).float(), dim=-1) * root
                            for m in MODALITIES], 1)                                  # [B, 2, E]
        if self.logit_bias is None:
            return both
        pair = torch.stack([torch.ones_like(self.logit_bias), self.logit_bias]).float().view(1, 2, 1)
        extra = torch.ones_like(both[..., :1]) * pair  # [B, 2, 1], its batch size taken from a tensor (for export)
        return torch.cat([both, extra], -1)


def sigmoid_loss(logits: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss over [B, B] logits (scale x cosine + bias): -log sigmoid(+logit) for the B matching pairs and
    -log sigmoid(-logit) for the others, summed and divided by B (Zhai et al. 2023)."""
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1
    return -nn.functional.logsigmoid(signs * logits.float()).sum() / len(logits)


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
    """Matching image–text pairs; CLIP-style two towers, InfoNCE or sigmoid loss; recall@k over the whole split."""

    monitor = "recall_mean"
    uses_fusion = False  # the towers read the encoders' pooled outputs: the model has no fusion

    def __init__(self, embed_dim: int = 256, temperature: float = 0.07, loss: str = "infonce",
                 sigmoid_bias: float = -10.0, init_from_encoders: bool | str = False):
        if loss not in LOSSES:
            raise CrossmodalError(f"task.loss={loss}: use {' or '.join(LOSSES)}")
        if init_from_encoders not in (True, False, "auto"):
            raise CrossmodalError(f"task.init_from_encoders={init_from_encoders}: use auto, true or false")
        self.embed_dim, self.temperature, self.sigmoid_bias = embed_dim, temperature, sigmoid_bias
        self.loss, self.init_from_encoders = loss, init_from_encoders
        self.decided: dict = {}  # what the encoders decided (initialise): the task's state

    @property
    def objective(self) -> str:
        """The loss in use: infonce or sigmoid (`auto` is infonce until the encoders say otherwise)."""
        return self.decided.get("loss") or ("infonce" if self.loss == "auto" else self.loss)

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

    def state(self) -> dict:
        """{} for towers as configured; else {"embed_dim", "loss"} as the pretrained encoders decided them."""
        return dict(self.decided)

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.decided = dict(state)

    def head(self, in_dim: Mapping[str, int]) -> nn.Module:
        """{modality: width} -> Towers: the model has no fusion, its head reads the pooled outputs."""
        bias = self.sigmoid_bias if self.objective == "sigmoid" else None
        return Towers(in_dim, self.decided.get("embed_dim", self.embed_dim), self.temperature, bias)

    def initialise(self, model, embed_texts) -> bool:
        """A new run: with `init_from_encoders` (auto: when both encoders are one CLIP/SigLIP model's towers) the
        towers start from the checkpoint's joint space and `loss: auto` becomes the model's own; the head is
        rebuilt for that width and loss. Returns whether anything changed."""
        spaces = joint_spaces(model.encoders, MODALITIES, "task.init_from_encoders" if self.init_from_encoders is
                              True else None)
        start = spaces is not None and self.init_from_encoders in (True, "auto")
        loss = spaces["image"].loss if spaces is not None and self.loss == "auto" else self.objective
        if not start and loss == self.objective:
            return False
        self.decided = {"loss": loss, **({"embed_dim": int(spaces["image"].projection.shape[0])} if start else {})}
        head = self.head({m: e.out_dim for m, e in model.encoders.items()})
        if start:
            head.start_from(spaces)
        model.head = head.to(next(model.parameters()).device)
        return True

    def losses(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings = out.logits                                                     # [B, 2, E (+1)]
        logits = embeddings[:, 0] @ embeddings[:, 1].T                              # [B images, B texts], scaled
        if self.objective == "sigmoid":
            return {"loss": sigmoid_loss(logits)}
        match = torch.arange(len(logits), device=logits.device)
        return {"loss": (nn.functional.cross_entropy(logits, match) +
                         nn.functional.cross_entropy(logits.T, match)) / 2}

    def metrics(self, full: bool = False) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({"ranks": RetrievalRanks()})

    def metric_names(self) -> list[str]:
        return [f"{n}_r{k}" for n in ("i2t", "t2i") for k in KS] + ["i2t_median_rank", "t2i_median_rank",
                                                                     "recall_mean"]

    def outputs(self, out) -> torch.Tensor:
        """[B, 2, E]: the scaled unit embeddings (the sigmoid loss's bias coordinate dropped)."""
        return out.logits[..., :self.decided.get("embed_dim", self.embed_dim)].float()

    def embeddings(self, out) -> dict[str, torch.Tensor]:
        unit = nn.functional.normalize(self.outputs(out), dim=-1)
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
