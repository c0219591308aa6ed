"""Prototypical Networks (Snell, Swersky & Zemel 2017, Algorithm 1).

    c_k = mean of f(x) over the support examples of class k            (prototypes)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                      (squared Euclidean)
    loss = cross-entropy of the query examples

Batch norm uses batch statistics while meta-training and running averages at test time, so
test predictions never depend on the other query images (non-transductive).

``algo.rotate_support`` (not in the paper; off by default; ``PerImageFeatures`` in base.py) scores
each meta-training episode once per choice of support set, from one forward pass.
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
