"""Batch-norm protocols of the optimisation-based learners.

MAML-style learners normalise with the statistics of the batch they are given (running averages
are meaningless across tasks). At test time that leaves a choice, which every result states:
transductive (the query set normalised with its own statistics, as in MAML's published numbers)
or not (each query image normalised together with the support set alone, Nichol et al. 2018).

Code that runs a model inside ``torch.func.vmap`` does it ``with vectorised(model)``: modules that
have a ``vectorised`` flag switch to a form that vmap computes correctly for that time.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

# Query images evaluated at once in the non-transductive protocol (memory only; results equal).
QUERY_CHUNK = 64


class BatchStatisticsNorm(nn.Module):
    """Batch norm that always normalises with the statistics of its input batch, keeping the
    affine parameters (and their names) of the layer it replaces.

    Inside ``torch.func.vmap`` it is computed from mean and variance: the batching rule of the
    fused kernel's backward is wrong (pytorch/functorch#534), which makes vmapped second-order
    MAML gradients silently wrong (1.7e-2 off in float64 on Conv4 here); the plain ops are exact.
    Outside vmap the fused kernel stays: the plain ops are 1.5x slower on a CPU."""

    always_batch_statistics = True  # Conv4's first block folds it into its convolution

    def __init__(self, batch_norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias, self.eps = batch_norm.weight, batch_norm.bias, batch_norm.eps
        self.vectorised = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.vectorised:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        normalised = (x - mean) * torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + self.eps)
        per_channel = [-1] + [1] * (x.dim() - 2)
        return normalised * self.weight.view(per_channel) + self.bias.view(per_channel)


def batch_statistics_only(model: nn.Module) -> bool:
    """Replace every batch-norm layer of ``model`` by a ``BatchStatisticsNorm``; returns whether
    there was one. Parameter names are unchanged, so checkpoints load either way."""
    found = False
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                if not child.affine:
                    raise ValueError(f"{name}: batch norm without affine parameters is not supported")
                setattr(parent, name, BatchStatisticsNorm(child))
                found = True
    return found


@contextmanager
def vectorised(model: nn.Module):
    """Switch the modules of ``model`` that have a ``vectorised`` flag to their vmap form."""
    flagged = [module for module in model.modules() if hasattr(module, "vectorised")]
    for module in flagged:
        module.vectorised = True
    try:
        yield
    finally:
        for module in flagged:
            module.vectorised = False


def predict_per_query(forward: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
                      query_x: torch.Tensor) -> torch.Tensor:
    """``forward`` of each query image batched with the support set alone, so no query
    prediction depends on another query image."""

    def predict_one(query_image):
        return forward(torch.cat([support_x, query_image.unsqueeze(0)]))[-1]

    return vmap(predict_one, chunk_size=QUERY_CHUNK)(query_x)


def predict_queries(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], task,
                    per_query: bool) -> torch.Tensor:
    """The query predictions of an adapted ``model`` (``forward``: its adapted function): one
    forward pass over the whole query set, or, with ``per_query`` (batch statistics,
    non-transductive protocol), each query image batched with the support set alone."""
    if per_query:
        with vectorised(model):
            return predict_per_query(forward, task.support_x, task.query_x)
    return forward(task.query_x)
