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
adds only its last step -- the same function as Q separate sequences, at a fraction of the cost.
The support examples enter in a random order while meta-training (a fixed one at test), so the
network cannot read a label from a position.

A curriculum (``algo.curriculum_ways``, metarun's, not the paper's): meta-training may begin on
tasks of fewer classes, drawn from each task's, and add classes linearly up to the test's over the
first ``algo.curriculum_fraction`` of ``trainer.max_steps``. Trained 20-way from the start, the
network stayed at chance (loss ln 20) for all of a 15-minute run's 587 updates: at first attention
reads every support example alike, and the signal that teaches it to find the query's class falls
with the number of classes (``WaysCurriculum`` in sequence.py).

A meta-batch is read as one batch of tasks (the blocks take tasks x steps x channels), and the
embedding sees all its images at once. Embedded task by task, batch norm had trained on the
statistics of 80 images of 5 classes and the network came to rely on them. Two seeds of a
600-update run (32-channel embedding, meta-batch 16) scored 88.7% / 85.2% on the test episodes
normalised with each task's own statistics, but 84.1% / 74.5% with the running averages that test
uses; read as one batch, 85.4% / 84.2% against 84.3% / 83.0%, in 247 s of training instead of 420.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, Metrics
from metarun.algorithms.sequence import WaysCurriculum, embed_tasks, in_reading_order
from metarun.tasks import Task, TaskBatch


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
        """``prefix``: tasks x support steps x channels; ``last``: tasks x queries x channels."""
        d, length = self.dilation, prefix.shape[1]
        earlier = F.pad(prefix, (0, 0, d, 0))[:, :length]
        before_last = prefix[:, length - d] if d <= length else prefix.new_zeros(prefix.shape[0], prefix.shape[2])
        return self.gate(earlier, prefix), self.gate(before_last.unsqueeze(1).expand_as(last), last)


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
        scores = torch.cat([q @ keys.transpose(1, 2), (q * k).sum(-1, keepdim=True)], dim=-1) / math.sqrt(q.shape[-1])
        weights = scores.softmax(dim=-1)
        read_last = weights[..., :-1] @ values + weights[..., -1:] * v
        return torch.cat([prefix, read], dim=-1), torch.cat([last, read_last], dim=-1)


class SNAIL(WaysCurriculum, MetaLearner):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, cfg, trainer_cfg):
        super().__init__("image")
        self.backbone = backbone
        self.ways = ways
        self.init_curriculum(cfg, trainer_cfg)
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

    def read_sequences(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The query logits (tasks x queries x ways) of embedded tasks of one shape."""
        support, labels = in_reading_order(support, support_y, self.training)
        prefix = torch.cat([support, F.one_hot(labels, self.ways).to(support.dtype)], dim=-1)
        last = torch.cat([query, query.new_zeros(*query.shape[:2], self.ways)], dim=-1)
        for block in self.blocks:
            prefix, last = block(prefix, last)
        return self.classify(last)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        support, query = embed_tasks(self.backbone, task.support_x[None], task.query_x[None])
        return self.read_sequences(support, task.support_y[None], query)[0]

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        """The meta-batch's images embedded as one batch (batch norm: the statistics of all of
        them; see the top), then each task cut to the curriculum's ways. Cut after the embedding,
        an update costs the same all through the run, so ``trainer.fit_max_steps``, which times
        the first updates, fits the budget."""
        support, query = embed_tasks(self.backbone, batch.support_x, batch.query_x)
        tasks = self.curriculum_step(TaskBatch(support, batch.support_y, query, batch.query_y))
        logits = self.read_sequences(tasks.support_x, tasks.support_y, tasks.query_x).flatten(0, 1)
        self.task_loss(logits, tasks.query_y.flatten()).backward()
        return self.task_metrics(logits.detach(), tasks.query_y.flatten())
