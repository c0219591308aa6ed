"""Prototypical Networks (Snell, Swersky & Zemel 2017, Algorithm 1).

    c_k = mean of f(x) over the support examples of class k            (prototypes)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                      (squared Euclidean)
    loss = cross-entropy of the query examples

Batch norm uses batch statistics while meta-training and running averages at test time, so
test predictions never depend on the other query images (non-transductive).

``rotate_support`` (not in the paper; off by default) scores each meta-training episode once per
choice of support set: the episode's S + Q images of a class (its support images first, in the
order the episode lists them) are taken in cyclic windows of S, each window the support set of one
view and the rest its queries, and the loss is the mean over the views (the first view is the
episode as drawn). The embeddings are computed once, so in a 1-shot episode with 2 queries every
image is a support image once and a query twice for the cost of one forward and backward pass.
"""
from __future__ import annotations

import torch
from torch import nn

from metarun.algorithms.base import MetaLearner, PerImageFeatures
from metarun.tasks import Task


def class_means(support: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
    """The mean of the support features of each class (ways x features): the prototypes."""
    ways = int(support_y.max()) + 1
    sums = torch.zeros(ways, support.shape[1], device=support.device, dtype=support.dtype)
    sums.index_add_(0, support_y, support)
    return sums / torch.bincount(support_y, minlength=ways).unsqueeze(1).to(support.dtype)


def negative_squared_distances(query: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """-||q - c||^2 for every query row and centre row, always in fp32: the expanded form
    ||q||^2 - 2 q.c + ||c||^2 cancels catastrophically in bfloat16."""
    with torch.autocast(query.device.type, enabled=False):
        query, centres = query.float(), centres.float()
        return -(query.pow(2).sum(1, keepdim=True) - 2 * query @ centres.T + centres.pow(2).sum(1).unsqueeze(0))


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Negative squared distances to the prototypes (in fp32)."""
    with torch.autocast(support.device.type, enabled=False):
        return negative_squared_distances(query, class_means(support.float(), support_y))


class ProtoNet(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, rotate_support: bool):
        super().__init__("image")
        self.backbone = backbone
        self.rotate_support = rotate_support

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return prototype_logits(support, task.support_y, query)

    def training_predictions(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.rotate_support:
            return super().training_predictions(task)
        labels = torch.cat([task.support_y, task.query_y])
        ways = int(labels.max()) + 1
        shots = task.support_x.shape[0] // ways
        features = self.backbone(torch.cat([task.support_x, task.query_x]))
        by_class = features[torch.sort(labels, stable=True).indices].unflatten(0, (ways, -1))
        per_class = by_class.shape[1]
        way_labels = torch.arange(ways, device=labels.device)
        logits, targets = [], []
        for view in range(-(-per_class // shots)):
            window = [(view * shots + i) % per_class for i in range(shots)]
            rest = [i for i in range(per_class) if i not in window]
            logits.append(prototype_logits(by_class[:, window].flatten(0, 1), way_labels.repeat_interleave(shots),
                                           by_class[:, rest].flatten(0, 1)))
            targets.append(way_labels.repeat_interleave(len(rest)))
        return torch.cat(logits), torch.cat(targets)
