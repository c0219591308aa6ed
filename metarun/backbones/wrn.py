"""Wide residual network WRN-d-k (Zagoruyko & Komodakis 2016), the WRN-28-10 feature extractor of
few-shot work such as LEO (Rusu et al. 2019) and S2M2 (Mangla et al. 2020).

    3x3 conv (16) -> 3 groups of n = (d - 4) / 6 pre-activation blocks
    [batch norm -> ReLU -> 3x3 conv -> (dropout) -> batch norm -> ReLU -> 3x3 conv] + shortcut
    of 16k, 32k, 64k channels, strides 1, 2, 2 -> batch norm -> ReLU -> global average pool

The shortcut is the identity, or a 1x1 conv where the channels or the stride change. WRN-28-10:
640 features; 84x84 inputs give a 640 x 21 x 21 map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WideBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        # the projection shortcut reads the pre-activated input, as in the paper's code
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(activated)
        h = self.conv1(activated)
        h = F.dropout(F.relu(self.bn2(h)), self.dropout, self.training)
        return self.conv2(h) + shortcut


class WideResNet(nn.Module):
    def __init__(self, in_channels: int, depth: int, widen: int, dropout: float, image_size: int):
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)]
        c, side = 16, image_size
        for width, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            for i in range(blocks_per_group):
                layers.append(WideBlock(c, width, stride if i == 0 else 1, dropout))
                c = width
            side = (side - 1) // stride + 1
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out_shape = (c, side, side)
        self.out_features = c

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))
