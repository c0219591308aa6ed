"""SNAIL, a Simple Neural Attentive Meta-Learner (Mishra, Rohaninejad, Chen & Abbeel 2018).

A task is read as a sequence: the embedded support examples, each with its label (one-hot),
then one query example with an all-zero label; the network outputs the query's class at the
last position. Between input and output, causal blocks alternate (Sec. 3 and appendix, few-shot
classification with T = N*K + 1 steps):

    AttentionBlock(64, 32) -> TCBlock(T, 128) -> AttentionBlock(256, 128) -> TCBlock(T, 128)
    -> AttentionBlock(512, 256) -> 1x1 convolution to N class scores

    TCBlock(T, D):       ceil(log2 T) dense blocks with dilations 1, 2, 4, ...
    DenseBlock(d, D):    x -> [x, tanh(conv_f(x)) * sigmoid(conv_g(x))], causal convolutions
                         of kernel 2 and dilation d with D filters each (written as linear maps)
    AttentionBlock(k, v): x -> [x, softmax(q k^T / sqrt(k), causally masked) v]

Each query gets its own sequence (the support set followed by that query), so no query sees
another: predictions are non-transductive, and batch norm in the embedding uses running
statistics at test time. Being causal, the network computes the same activations at the support
positions of every such sequence; they are computed once per task (the prefix), and each query
adds only its last step -- the same function as Q separate sequences, at a fraction of the cost. The support examples enter in a random order while meta-training
(a fixed one at test), so the network cannot read a label from a position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner
from metarun.tasks import Task

# seeds the order of the support examples at test time, so a checkpoint scores the same every time
EVAL_ORDER_SEED = 0


class DenseBlock(nn.Module):
    """The causal convolution of kernel 2 and dilation d is one linear map of [x_{t-d}, x_t]
    (x_{t-d} = 0 before the start), written as such."""

    def __init__(self, in_channels: int, dilation: int, filters: int):
        super().__init__()
        self.dilation = dilation
        self.taps = nn.Linear(2 * in_channels, 2 * filters)

    def gate(self, earlier: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        f, g = self.taps(torch.cat([earlier, now], dim=-1)).chunk(2, dim=-1)
        return torch.cat([now, torch.tanh(f) * torch.sigmoid(g)], dim=-1)

    def forward(self, prefix: torch.Tensor, last: torch.Tensor):
        d, length = self.dilation, len(prefix)
        earlier = F.pad(prefix, (0, 0, d, 0))[:length]
        before_last = prefix[length - d] if d <= length else prefix.new_zeros(prefix.shape[1])
        return self.gate(earlier, prefix), self.gate(before_last.expand_as(last), last)


class TCBlock(nn.Module):
    def __init__(self, in_channels: int, length: int, filters: int):
        super().__init__()
        levels = max(1, math.ceil(math.log2(length)))
        self.blocks = nn.ModuleList(DenseBlock(in_channels + i * filters, 2 ** i, filters)
                                    for i in range(levels))
        self.out_channels = in_channels + levels * filters

    def forward(self, prefix: torch.Tensor, last: torch.Tensor):
        for block in self.blocks:
            prefix, last = block(prefix, last)
        return prefix, last


class AttentionBlock(nn.Module):
    def __init__(self, in_channels: int, key_size: int, value_size: int):
        super().__init__()
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.out_channels = in_channels + value_size

    def forward(self, prefix: torch.Tensor, last: torch.Tensor):
        keys, values = self.key(prefix), self.value(prefix)
        read = F.scaled_dot_product_attention(self.query(prefix), keys, values, is_causal=True)
        # the last step attends to the whole prefix and to itself
        q, k, v = self.query(last), self.key(last), self.value(last)
        scores = torch.cat([q @ keys.T, (q * k).sum(-1, keepdim=True)], dim=1) / math.sqrt(q.shape[-1])
        weights = scores.softmax(dim=1)
        read_last = weights[:, :-1] @ values + weights[:, -1:] * v
        return torch.cat([prefix, read], dim=-1), torch.cat([last, read_last], dim=-1)


class SNAIL(MetaLearner):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, cfg):
        super().__init__("image")
        self.backbone = backbone
        self.ways = ways
        length = ways * shots + 1
        blocks, channels = [], backbone.out_features + ways
        for i, (key_size, value_size) in enumerate(cfg.attention):
            if i > 0:
                blocks.append(TCBlock(channels, length, cfg.tc_filters))
                channels = blocks[-1].out_channels
            blocks.append(AttentionBlock(channels, key_size, value_size))
            channels = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.classify = nn.Linear(channels, ways)  # the 1x1 convolution over time steps

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        n_support = len(task.support_y)
        features = self.backbone(torch.cat([task.support_x, task.query_x]))
        support, query = features[:n_support], features[n_support:]
        generator = None if self.training else torch.Generator().manual_seed(EVAL_ORDER_SEED)
        order = torch.randperm(n_support, generator=generator).to(support.device)
        prefix = torch.cat([support[order], F.one_hot(task.support_y[order], self.ways).to(support.dtype)], 1)
        last = torch.cat([query, query.new_zeros(len(query), self.ways)], 1)
        for block in self.blocks:
            prefix, last = block(prefix, last)
        return self.classify(last)
