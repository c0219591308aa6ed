"""The 4-block convolutional embedding of Vinyals et al. 2016, used by MAML and ProtoNets."""
from __future__ import annotations

import torch
from torch import nn


class ChannelsLastConv2d(nn.Conv2d):
    """A convolution whose output is laid out channels-last (NHWC).

    A convolution's output follows the layout of its input and weight. A one-channel image
    (Omniglot) and the first layer's 64 x 1 x 3 x 3 weight are contiguous in both layouts, so
    when the weight is an adapted one, theta - alpha * grad (the MAML family, Meta-SGD), it comes
    out NCHW, and so did the first block's maps, the network's largest: their batch norm and
    max-pool ran in the NCHW CPU kernels (on a 75 x 64 x 28 x 28 map, max-pool forward and
    backward 30.3 against 8.5 ms, batch norm 23.6 against 12.5 ms, one thread). Here the weight is
    laid out channels-last first (576 numbers, where copying the output map would move 3.8
    million), so the map comes out channels-last. Parameters and their names are a Conv2d's."""

    vectorised = False  # inside torch.func.vmap, which cannot lay tensors out channels-last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vectorised:
            return super().forward(x)
        weight = self.weight
        if weight.stride(1) != 1:  # not channels-last in memory; .contiguous() would see no difference
            weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device,
                                 memory_format=torch.channels_last).copy_(weight)
        # a channels-last weight gives a channels-last output; the guard copies only if a backend differs
        return self._conv_forward(x, weight, self.bias).contiguous(memory_format=torch.channels_last)


def conv_block(in_channels: int, out_channels: int, pool: bool, channels_last: bool) -> nn.Sequential:
    """conv -> batch norm -> ReLU -> max-pool, computed with the pool first: ReLU is monotonic,
    so max-pool then ReLU is the same function, with a quarter of the ReLU work."""
    conv = ChannelsLastConv2d if channels_last else nn.Conv2d
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2) if pool else nn.Identity(),
        nn.ReLU(inplace=True),
    )


class Conv4(nn.Module):
    """[3x3 conv, batch norm, ReLU, 2x2 max-pool] x blocks, flattened. 28x28 -> 64 features.

    Only the first ``pooled_blocks`` blocks pool (all of them in Vinyals/Finn/Snell; the first two
    in Relation Networks, which compare feature maps rather than vectors)."""

    def __init__(self, in_channels: int, channels: int, blocks: int, pooled_blocks: int,
                 image_size: int, channels_last: bool):
        super().__init__()
        self.pooled_blocks = pooled_blocks
        layers, c = [], in_channels
        for block in range(blocks):
            layers.append(conv_block(c, channels, pool=block < pooled_blocks, channels_last=channels_last))
            c = channels
        self.features = nn.Sequential(*layers)
        side = image_size
        for _ in range(min(blocks, pooled_blocks)):
            side //= 2
        self.out_shape = (channels, side, side)
        self.out_features = channels * side * side
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # channels-last from the first convolution on, whatever x's layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(1)
