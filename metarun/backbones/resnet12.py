"""ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019, MetaOptNet): four residual blocks, each

    [3x3 conv -> batch norm -> leaky ReLU(0.1)] x 3, plus a 1x1 conv + batch norm shortcut,
    summed, leaky ReLU, 2x2 max-pool

with 64-160-320-640 channels. 84x84 inputs give a 640 x 5 x 5 map; ``global_pool`` averages it
to 640 features (as most recent few-shot work does), else it is flattened (16,000 features, as
in MetaOptNet). Optional DropBlock (Ghiasi, Lin & Le 2018) after the last two blocks, as in
MetaOptNet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


class DropBlock(nn.Module):
    """In training, zero random block_size x block_size squares of each feature map and rescale
    the rest so the expected activation is unchanged (Ghiasi et al. 2018). The drop rate rises
    linearly from 0 to ``drop_rate`` over the first ``anneal_steps`` training forward passes (a
    buffer, so checkpoints keep it); block centres are drawn where a whole block fits, at the
    rate that makes ``drop_rate`` the expected dropped fraction. On a map smaller than the block,
    the block shrinks to the largest odd size that fits."""

    def __init__(self, drop_rate: float, block_size: int, anneal_steps: int):
        super().__init__()
        self.drop_rate, self.block_size, self.anneal_steps = drop_rate, block_size, anneal_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_rate == 0:
            return x
        self.steps += 1
        rate = self.drop_rate * min(1.0, float(self.steps) / max(self.anneal_steps, 1))
        size = x.shape[-1]
        block = min(self.block_size, size)
        block -= 1 - block % 2  # odd, so a max-pool around each centre keeps the map's size
        fits = size - block + 1
        gamma = rate / block ** 2 * size ** 2 / fits ** 2
        centres = torch.zeros_like(x)
        edge = block // 2
        centres[..., edge:edge + fits, edge:edge + fits] = torch.bernoulli(
            torch.full((*x.shape[:-2], fits, fits), gamma, device=x.device, dtype=x.dtype))
        keep = 1 - F.max_pool2d(centres, kernel_size=block, stride=1, padding=edge)
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


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
                 image_size: int, drop_rate: float, drop_block_size: int, drop_anneal_steps: int):
        super().__init__()
        blocks, c = [], in_channels
        for i, out in enumerate(channels):
            blocks.append(ResidualBlock(c, out, slope))
            if i >= len(channels) - 2 and drop_rate > 0:  # the last two blocks, as in MetaOptNet
                blocks.append(DropBlock(drop_rate, drop_block_size, drop_anneal_steps))
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
