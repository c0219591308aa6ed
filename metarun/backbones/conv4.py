"""The 4-block convolutional embedding of Vinyals et al. 2016, used by MAML and ProtoNets, and its
strided form, MAML's and iMAML's Omniglot network."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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
        return self.convolve(x, self.weight, self.bias)

    def convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.vectorised:
            return self._conv_forward(x, weight, bias)
        if weight.stride(1) != 1:  # not channels-last in memory; .contiguous() would see no difference
            weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device,
                                 memory_format=torch.channels_last).copy_(weight)
        # a channels-last weight gives a channels-last output; the guard copies only if a backend differs
        return self._conv_forward(x, weight, bias).contiguous(memory_format=torch.channels_last)


def conv_block(in_channels: int, out_channels: int, halve: str | None, channels_last: bool) -> nn.Sequential:
    """conv -> batch norm -> ReLU, halving the maps (``halve``) with a 2x2 max-pool after it
    ("max_pool"; computed with the pool first: ReLU is monotonic, so max-pool then ReLU is the
    same function, with a quarter of the ReLU work), or with a stride-2 convolution ("stride",
    padding 1: a side s becomes ceil(s / 2)), or not at all (None)."""
    conv = ChannelsLastConv2d if channels_last else nn.Conv2d
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size=3, padding=1, stride=2 if halve == "stride" else 1),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2) if halve == "max_pool" else nn.Identity(),
        nn.ReLU(inplace=True),
    )


def normalises_with_batch_statistics(norm: nn.Module) -> bool:
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return norm.training or norm.running_mean is None
    return getattr(norm, "always_batch_statistics", False)  # the MAML family's BatchStatisticsNorm


def patch_moments(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and covariance of the input patches that ``conv`` reads (zero padding included),
    and their number. Constants for autograd; in the input's precision even under autocast."""
    size = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    picker = torch.eye(size, dtype=x.dtype, device=x.device).view(size, conv.in_channels, *conv.kernel_size)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        patches = F.conv2d(x, picker, None, conv.stride, conv.padding, conv.dilation).flatten(2)
        count = patches.shape[0] * patches.shape[2]
        mean = patches.sum((0, 2)) / count
        centred = patches - mean.view(1, -1, 1)
        covariance = torch.bmm(centred, centred.transpose(1, 2)).sum(0) / count
    return mean, covariance, count


class FoldedNormBlock(nn.Sequential):
    """A first block (conv, batch norm, pool, ReLU) on single-channel images, computed without a
    batch-norm pass over its feature maps, the network's largest.

    Each output channel of the convolution is w . p + b for the 3x3 input patch p, so its batch
    mean and variance are w . E[p] + b and w' Cov(p) w, from the 9 x 9 moments of the patches;
    normalising then is a convolution with w scaled by gamma / sqrt(var + eps) and a shifted
    bias. Same function, same gradients (autograd goes through w in both moments), running
    averages updated as ``BatchNorm2d`` does, and closer to a float64 reference than the
    batch-norm kernel. It saves batch norm's reads and writes of the 64-channel 28x28 maps
    forward and backward: a ProtoNet 60-way 2-query block forward and backward 24.3 -> 18.7 ms
    (2 threads, AVX2). Three input channels need 27-number patches, which cost more than they
    save (84x84 RGB: 122 -> 132 ms), so RGB blocks stay plain. With running averages in eval
    mode, and inside vmap, the layers run one after another."""

    vectorised = False  # inside torch.func.vmap (see metarun.algorithms.batch_norm.vectorised)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, *rest = self
        if self.vectorised or not normalises_with_batch_statistics(norm):
            return super().forward(x)
        patch_mean, patch_covariance, count = patch_moments(conv, x)
        with torch.autocast(x.device.type, enabled=False):
            weight = conv.weight.flatten(1)
            mean = weight @ patch_mean + conv.bias  # conv_block's convolutions have a bias
            variance = ((weight @ patch_covariance) * weight).sum(1)
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.training and norm.track_running_stats:
            update_running_averages(norm, mean.detach(), variance.detach(), count)
        scale = norm.weight * torch.rsqrt(variance + norm.eps)
        shift = norm.bias + (conv.bias - mean) * scale
        convolve = conv.convolve if isinstance(conv, ChannelsLastConv2d) else conv._conv_forward
        y = convolve(x, conv.weight * scale.view(-1, 1, 1, 1), shift)
        for layer in rest:
            y = layer(y)
        return y


@torch.no_grad()
def update_running_averages(norm: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, variance: torch.Tensor,
                            count: int) -> None:
    """What ``BatchNorm2d`` does in training: the unbiased variance enters the running average."""
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    norm.running_mean.lerp_(mean, momentum)
    norm.running_var.lerp_(variance * count / (count - 1), momentum)


# how a block halves its maps (backbone.downsample)
DOWNSAMPLING = ("max_pool", "stride")
# how the last maps become the feature vector (backbone.readout)
READOUTS = ("flatten", "mean", "max")


class Conv4(nn.Module):
    """[3x3 conv, batch norm, ReLU, 2x2 max-pool] x blocks, flattened. 28x28 -> 64 features.

    Only the first ``pooled_blocks`` blocks halve their maps (all of them in Vinyals/Finn/Snell;
    the first two in Relation Networks, which compare feature maps rather than vectors).
    ``downsample="stride"`` halves them with stride-2 convolutions instead of max-pools, and
    ``readout="mean"`` averages the last maps over their positions instead of flattening them:
    both together are the network of MAML's Omniglot code (Finn et al. 2017, Sec. 5.2: "strided
    convolutions instead of max-pooling"; 28 -> 14 -> 7 -> 4 -> 2, then the mean of the 2x2 map),
    about a quarter of the max-pool form's multiply-adds on 28x28 images. ``readout="max"`` keeps
    each channel's largest value (FEAT's ConvNet on 84x84 images: a 5x5 max-pool of the last maps)."""

    def __init__(self, in_channels: int, channels: int, blocks: int, pooled_blocks: int,
                 image_size: int, channels_last: bool, fold_first_batch_norm: bool,
                 downsample: str = "max_pool", readout: str = "flatten"):
        super().__init__()
        self.pooled_blocks = pooled_blocks
        self.readout = readout
        layers, c = [], in_channels
        for block in range(blocks):
            layer = conv_block(c, channels, halve=downsample if block < pooled_blocks else None,
                               channels_last=channels_last)
            if block == 0 and in_channels == 1 and fold_first_batch_norm:
                layer = FoldedNormBlock(*layer)
            layers.append(layer)
            c = channels
        self.features = nn.Sequential(*layers)
        side = image_size
        for _ in range(min(blocks, pooled_blocks)):
            side = side // 2 if downsample == "max_pool" else (side + 1) // 2
        self.out_shape = (channels, side, side)
        self.out_features = channels * side * side if readout == "flatten" else channels
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # channels-last from the first convolution on, whatever x's layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.feature_map(x)
        if self.readout == "mean":
            return maps.mean((2, 3))
        return maps.amax((2, 3)) if self.readout == "max" else maps.flatten(1)
