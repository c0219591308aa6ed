"""R2-D2, ridge regression differentiable discriminator (Bertinetto, Henriques, Torr & Vedaldi,
ICLR 2019, "Meta-learning with differentiable closed-form solvers", Sec. 3).

    X = f(support) (n x e),  Y = one-hot support labels (n x ways)
    W = X^T (X X^T + lambda I_n)^-1 Y                (ridge regression, Woodbury form: an n x n solve)
    logits(query) = alpha * f(query) W               (alpha rescales ridge outputs for the softmax)
    loss = cross-entropy of the query examples; f, lambda and alpha are meta-learned

The base learner is solved in closed form inside every episode and differentiated through, so
the embedding is trained for the classifier it will be used with. With more support examples than
feature dimensions the primal form (X^T X + lambda I_e)^-1 X^T Y, the same W, is the smaller
solve and is used instead. The paper's output adjustment also has a bias beta, added to every
class's logit alike: it cancels in the softmax, so it is left out.

Batch norm as in ProtoNet: batch statistics while meta-training, running averages at test time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, PerImageFeatures
from metarun.tasks import Task


def ridge_weights(support: torch.Tensor, targets: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    """argmin_W |X W - Y|^2 + ridge |W|^2, solved in whichever of its two forms is smaller."""
    n, e = support.shape
    if n <= e:
        gram = support @ support.T + ridge * torch.eye(n, device=support.device, dtype=support.dtype)
        return support.T @ torch.linalg.solve(gram, targets)
    gram = support.T @ support + ridge * torch.eye(e, device=support.device, dtype=support.dtype)
    return torch.linalg.solve(gram, support.T @ targets)


class R2D2(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__("image")
        self.backbone = backbone
        # meta-learned in log space, so both stay positive
        self.log_ridge = nn.Parameter(torch.tensor(math.log(cfg.ridge_init)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.scale_init)))
        self.rotate_support = cfg.rotate_support

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # in fp32: a linear solve in bfloat16 loses the few digits the ridge penalty leaves
        with torch.autocast(support.device.type, enabled=False):
            support, query = support.float(), query.float()
            targets = F.one_hot(task.support_y, int(task.support_y.max()) + 1).float()
            weights = ridge_weights(support, targets, self.log_ridge.exp())
            return self.log_scale.exp() * (query @ weights)
