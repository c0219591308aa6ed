"""The differentiable inner loop shared by the optimisation-based learners.

Parameters are a plain ``{name: tensor}`` dict evaluated with ``torch.func.functional_call``:
no module is cloned and the meta-parameters are never updated in place, so the outer
gradient flows through every inner step (or, first-order, through the last one only).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from metarun.algorithms.base import Metrics
from metarun.algorithms.batch_norm import vectorised
from metarun.tasks import TaskBatch

Params = dict[str, torch.Tensor]


def inner_sgd(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              loss_fn: Callable, lr: float | Params, steps: int, create_graph: bool,
              partial: bool = False) -> Params:
    """``steps`` steps of gradient descent on ``loss_fn(model(x), y)`` from ``params``.

    ``lr`` is one step size, or one per parameter: a tensor (Meta-SGD's learned, element-wise
    rates) or a number. An entry whose step size is the number 0 is held where it is, and no
    gradient is taken for it (BOIL's head).

    ``create_graph=True`` keeps the graph of each step, so the result is differentiable
    to second order in ``params`` (MAML); ``False`` treats the inner gradients as constants
    (first-order MAML).

    ``partial``: the gradients are taken with ``torch.func.grad``: the partial derivatives in
    each entry of ``params``, even where an entry was computed from others (ProtoMAML's head from
    the body: ``torch.autograd.grad`` would give the body's total derivative, through the head
    too); unlike ``torch.autograd.grad`` it runs inside ``torch.func.vmap``, and it stays
    differentiable by the outer backward pass.
    """
    rates = lr if isinstance(lr, dict) else dict.fromkeys(params, lr)
    held = {name: p for name, p in params.items() if isinstance(rates[name], (int, float)) and rates[name] == 0}
    adapted = {name: p for name, p in params.items() if name not in held}

    def support_loss(adapted: Params) -> torch.Tensor:
        return loss_fn(functional_call(model, adapted | held, (x,)), y)

    for _ in range(steps):
        if partial:
            grads = list(grad(support_loss)(adapted).values())
            if not create_graph:
                grads = [g.detach() for g in grads]
        else:
            grads = torch.autograd.grad(support_loss(adapted), list(adapted.values()), create_graph=create_graph)
        adapted = {name: p - rates[name] * g for (name, p), g in zip(adapted.items(), grads)}
    return adapted | held


def vmap_over_tasks(task_batching: str, model: nn.Module, device: torch.device) -> bool:
    """Whether a meta-batch goes through ``torch.func.vmap`` at once (``algo.task_batching``).

    auto: on CUDA, and on a CPU for models without convolutions (the sinusoid MLP: about 9x the
    loop's speed, whose time there is Python overhead). CPU convolutions gain nothing from being
    batched across tasks, so they keep the loop, and its memory of one task.
    """
    if task_batching == "auto":
        return device.type == "cuda" or not any(
            isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    return task_batching == "vmap"


def backward_vmapped(learner, model: nn.Module, adapt_and_predict_queries: Callable,
                     batch: TaskBatch) -> Metrics:
    """Back-propagate the meta-batch's query loss with every task adapted at once:
    ``adapt_and_predict_queries(support_x, support_y, query_x)`` is one task's inner loop and
    query predictions, vmapped over the tasks while ``model`` runs in its vmap form."""
    with vectorised(model):
        # randomness="different": each task its own random draws (DropBlock, dropout), as in the loop
        predictions = vmap(adapt_and_predict_queries, randomness="different")(
            batch.support_x, batch.support_y, batch.query_x)
    predictions, targets = predictions.flatten(0, 1), batch.query_y.flatten(0, 1)
    learner.task_loss(predictions, targets).backward()  # the mean over tasks of equal-sized query sets
    return learner.task_metrics(predictions.detach(), targets)
