"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, Sec. 3).

    c_k = sum of f(x) over the support examples of class k        (feature maps, summed for K-shot)
    r_{q,k} = g([f(x_q), c_k])                                     (learned relation score in [0, 1])
    loss = sum (r_{q,k} - [y_q = k])^2                             (regression to the match, MSE)

f is the backbone's feature map (Conv4 with pooling in its first two blocks only, as in the
paper: ``backbone.pooled_blocks=2``, set for this algorithm by ``algo_data``); g is two
conv blocks and two fully connected layers. Batch norm uses running statistics at test time
(non-transductive).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, PerImageFeatures
from metarun.backbones.conv4 import conv_block
from metarun.errors import ConfigError
from metarun.tasks import Task


class RelationModule(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], channels: int, hidden: int):
        super().__init__()
        c, side, _ = in_shape
        self.convs = nn.Sequential(conv_block(2 * c, channels, halve="max_pool", channels_last=False),
                                   conv_block(channels, channels, halve="max_pool", channels_last=False))
        side = side // 2 // 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.convs(pairs))).squeeze(1)


class RelationNet(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__("image")
        self.backbone = backbone
        side = backbone.out_shape[-1]
        if side < 4:
            raise ConfigError("backbone.pooled_blocks", backbone.pooled_blocks,
                              f"fewer: the relation module pools twice, so it needs feature maps of "
                              f"at least 4x4, and these are {side}x{side}")
        self.relation = RelationModule(backbone.out_shape, cfg.relation_channels, cfg.relation_hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.feature_map(x)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """(queries, ways) relation scores from the images' feature maps."""
        ways = int(task.support_y.max()) + 1
        classes = torch.zeros(ways, *support.shape[1:], device=support.device, dtype=support.dtype)
        classes = classes.index_add(0, task.support_y, support)
        n_query = query.shape[0]
        pairs = torch.cat([classes.unsqueeze(0).expand(n_query, *classes.shape),
                           query.unsqueeze(1).expand(n_query, ways, *query.shape[1:])], dim=2)
        return self.relation(pairs.flatten(0, 1)).view(n_query, ways)

    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction, F.one_hot(target, prediction.shape[1]).to(prediction.dtype))

    def class_probabilities(self, prediction: torch.Tensor) -> torch.Tensor:
        """Relation scores in (0, 1), trained by MSE towards the one-hot match, are no logits:
        normalised to sum to 1 instead of a softmax (which would flatten them towards uniform)."""
        scores = prediction.float()
        return scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)
