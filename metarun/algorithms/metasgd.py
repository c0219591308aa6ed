"""Meta-SGD (Li, Zhou, Chen & Li 2017, Algorithm 1).

    theta_i' = theta - alpha o grad_theta L_{T_i}^{support}(f_theta)      (alpha: one rate per weight)
    (theta, alpha) <- (theta, alpha) - beta * grad_{theta, alpha} sum_i L_{T_i}^{query}(f_{theta_i'})

MAML with the scalar inner learning rate replaced by a learned tensor of the parameters' shape
(the update direction and size are meta-learned with the initialisation); everything else,
batch norm included, is MAML's.
"""
from __future__ import annotations

import torch
from torch import nn

from metarun.algorithms.maml import MAML


class MetaSGD(MAML):
    def init_step_sizes(self, cfg) -> None:
        low, high = cfg.inner_lr_init
        self.names = [name for name, _ in self.model.named_parameters()]
        # the paper initialises alpha uniformly at random in [0.005, 0.1]
        self.alphas = nn.ParameterList(
            nn.Parameter(torch.empty_like(p).uniform_(low, high)) for p in self.model.parameters())

    def step_sizes(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.alphas))
