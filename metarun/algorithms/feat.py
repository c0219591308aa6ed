"""FEAT, Few-shot Embedding Adaptation with Transformer (Ye, Hu, Zhan & Sha, CVPR 2020,
"Few-Shot Learning via Embedding Adaptation with Set-to-Set Functions", Sec. 3-4).

    c_k = mean of f(x) over the support examples of class k                  (prototypes)
    {c'_k} = T({c_k})                       (a set-to-set function: one-head self-attention over
                                             the episode's prototypes, residual, layer norm)
    logits(q) = -||f(q) - c'_k||^2 / tau     (``algo.temperature``; or cosine / tau)
    loss = CE(logits, y_q) + lambda * CE(logits_reg, y)                        (training only)

The regulariser (``algo.balance`` = lambda): the same T adapts each class's own set of support and
query embeddings; every one of the episode's embeddings, unadapted, is then classified against
the centres of those adapted class sets (temperature ``algo.temperature2``), so that T maps a
class's instances near their own centre and away from the others'.

A test prediction uses the support set and that query image alone, with batch norm's running
averages, so FEAT evaluates many test episodes in one backbone pass as ProtoNet does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, Metrics, PerImageFeatures, mean_metrics
from metarun.algorithms.protonet import class_means, negative_squared_distances
from metarun.tasks import Task, TaskBatch

ATTENTION_DROPOUT = 0.1  # the authors' code, on the attention weights


class SetAttention(nn.Module):
    """T: one-head scaled dot-product self-attention over each set of a batch (sets x members x
    dim), its output projected, added to the input and layer-normalised (the authors' one-head
    Transformer, their initialisation included)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        for projection in (self.query, self.key, self.value):
            nn.init.normal_(projection.weight, std=math.sqrt(1.0 / dim))  # sqrt(2 / (d_model + d_k))
        self.out = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.out.weight)
        self.norm = nn.LayerNorm(dim)
        self.dropout, self.attention_dropout = nn.Dropout(dropout), nn.Dropout(ATTENTION_DROPOUT)

    def forward(self, sets: torch.Tensor) -> torch.Tensor:
        scores = self.query(sets) @ self.key(sets).transpose(1, 2) / math.sqrt(sets.shape[-1])
        attended = self.attention_dropout(scores.softmax(-1)) @ self.value(sets)
        return self.norm(sets + self.dropout(self.out(attended)))


class FEAT(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__("image")
        self.backbone = backbone
        self.set_function = SetAttention(backbone.out_features, cfg.dropout)
        self.distance, self.temperature, self.temperature2 = cfg.distance, cfg.temperature, cfg.temperature2
        self.balance = cfg.balance

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def logits(self, embeddings: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings, centres = embeddings.float(), centres.float()
            if self.distance == "euclidean":
                return negative_squared_distances(embeddings, centres) / temperature
            return embeddings @ F.normalize(centres, dim=1).T / temperature  # the authors' cosine form

    def adapted_prototypes(self, support: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(support.device.type, enabled=False):
            return self.set_function(class_means(support.float(), support_y).unsqueeze(0)).squeeze(0)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.logits(query, self.adapted_prototypes(support, task.support_y), self.temperature)

    def regulariser_logits(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every embedding of the episode against the centres of each class's adapted set of
        support and query embeddings, with its class."""
        embeddings = torch.cat([support, query]).float()
        labels = torch.cat([task.support_y, task.query_y])
        ways = int(labels.max()) + 1
        by_class = embeddings[torch.sort(labels, stable=True).indices].unflatten(0, (ways, -1))
        with torch.autocast(embeddings.device.type, enabled=False):
            centres = self.set_function(by_class).mean(1)
        return self.logits(embeddings, centres, self.temperature2), labels

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        per_task = []
        for task in batch:
            support, query = self.episode_features(task)
            prediction = self.predict_from_features(task, support, query)
            loss = self.task_loss(prediction, task.query_y)
            if self.balance:
                loss = loss + self.balance * self.task_loss(*self.regulariser_logits(task, support, query))
            (loss / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)
