"""ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019, MetaOptNet): four residual blocks, each

    [3x3 conv -> batch norm -> leaky ReLU(0.1)] x 3, plus a 1x1 conv + batch norm shortcut,
    summed, leaky ReLU, 2x2 max-pool

with 64-160-320-640 channels. 84x84 inputs give a 640 x 5 x 5 map; ``global_pool`` averages it
to 640 features (as most recent few-shot work does), else it is flattened (16,000 features, as
in MetaOptNet). DropBlock regularisation is not implemented.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(in_channels, out_channels, 3), nn.LeakyReLU(slope),
            *conv_bn(out_channels, out_channels, 3), nn.LeakyReLU(slope),
            *conv_bn(out_channels, out_channels, 3))
        self.shortcut = nn.Sequential(*conv_bn(in_channels, out_channels, 1))
        self.out = nn.Sequential(nn.LeakyReLU(slope), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], slope: float, global_pool: bool,
                 image_size: int):
        super().__init__()
        blocks, c = [], in_channels
        for out in channels:
            blocks.append(ResidualBlock(c, out, slope))
            c = out
        self.features = nn.Sequential(*blocks)
        self.global_pool = global_pool
        side = image_size
        for _ in channels:
            side //= 2
        self.out_shape = (c, side, side)
        self.out_features = c if global_pool else c * side * side

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x)
        return maps.mean(dim=(2, 3)) if self.global_pool else maps.flatten(1)
