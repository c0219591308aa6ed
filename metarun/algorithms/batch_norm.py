"""Batch-norm protocols of the optimisation-based learners.

MAML-style learners normalise with the statistics of the batch they are given (running averages
are meaningless across tasks). At test time that leaves a choice, which every result states:
transductive (the query set normalised with its own statistics, as in MAML's published numbers)
or not (each query image normalised together with the support set alone, Nichol et al. 2018).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import vmap

# Query images evaluated at once in the non-transductive protocol (memory only; results equal).
QUERY_CHUNK = 64


def batch_statistics_only(model: nn.Module) -> bool:
    """Make every batch-norm layer of ``model`` normalise with the statistics of its input batch;
    returns whether there was one."""
    found = False
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
            found = True
    return found


def predict_per_query(forward: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
                      query_x: torch.Tensor) -> torch.Tensor:
    """``forward`` of each query image batched with the support set alone, so no query
    prediction depends on another query image."""

    def predict_one(query_image):
        return forward(torch.cat([support_x, query_image.unsqueeze(0)]))[-1]

    return vmap(predict_one, chunk_size=QUERY_CHUNK)(query_x)


def predict_queries(forward: Callable[[torch.Tensor], torch.Tensor], task, per_query: bool) -> torch.Tensor:
    """The query predictions of an adapted model: one forward pass over the whole query set, or,
    with ``per_query`` (batch statistics, non-transductive protocol), each query image batched
    with the support set alone."""
    if per_query:
        return predict_per_query(forward, task.support_x, task.query_x)
    return forward(task.query_x)
