"""Prototypical Networks (Snell, Swersky & Zemel 2017, Algorithm 1).

    c_k = mean of f(x) over the support examples of class k            (prototypes)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                      (squared Euclidean)
    loss = cross-entropy of the query examples

Batch norm uses batch statistics while meta-training and running averages at test time, so
test predictions never depend on the other query images (non-transductive).
"""
from __future__ import annotations

import torch
from torch import nn

from metarun.algorithms.base import MetaLearner
from metarun.tasks import Task


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Negative squared distances, always in fp32: the expanded form ||q||^2 - 2 q.c + ||c||^2
    cancels catastrophically in bfloat16."""
    with torch.autocast(support.device.type, enabled=False):
        support, query = support.float(), query.float()
        ways = int(support_y.max()) + 1
        sums = torch.zeros(ways, support.shape[1], device=support.device, dtype=support.dtype)
        sums.index_add_(0, support_y, support)
        counts = torch.bincount(support_y, minlength=ways).unsqueeze(1).to(support.dtype)
        prototypes = sums / counts
        squared = (query.pow(2).sum(1, keepdim=True) - 2 * query @ prototypes.T
                   + prototypes.pow(2).sum(1).unsqueeze(0))
        return -squared


class ProtoNet(MetaLearner):
    def __init__(self, backbone: nn.Module):
        super().__init__("image")
        self.backbone = backbone

    def logits(self, task: Task) -> torch.Tensor:
        n_support = task.support_x.shape[0]
        features = self.backbone(torch.cat([task.support_x, task.query_x]))
        return prototype_logits(features[:n_support], task.support_y, features[n_support:])

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        return self.logits(task)
