"""Reptile (Nichol, Achiam & Schulman 2018, Algorithm 2, the batched version).

    for each task T_i in the meta-batch:
        phi_i = theta after k steps of SGD/Adam on mini-batches of T_i's examples
    theta <- theta + epsilon * mean_i (phi_i - theta)        (epsilon annealed linearly to 0)

No second derivatives and no support/query split while meta-training: each task's support and
query images together are its training examples (the paper's "train shots"). The outer update
is handed to the trainer as the gradient ``theta - mean_i phi_i``, so plain SGD with learning rate
epsilon (``algo.optimizer``) and a linear schedule (``algo.scheduler``) apply the rule above.

The inner optimiser is Adam with beta1 = 0. As in the paper's code, its second-moment estimate is
carried from task to task through meta-training (``inner_optimizer_state: carried``: the state is
part of the learner, so it is checkpointed), and every test task starts from the state training
ended with, leaving it unchanged. Starting each task afresh (``fresh``) makes every first step
``lr * sign(g)`` for every weight alike, which learns far slower: see the recipe's comments.

Batch norm uses batch statistics as in the paper's code; at test time ``transductive_bn`` says
whether the query set is normalised with its own statistics (the paper's "transductive" numbers)
or each query image together with the support set alone (its non-transductive protocol).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from metarun.algorithms.base import MetaLearner, Metrics, mean_metrics
from metarun.algorithms.batch_norm import batch_statistics_only, predict_queries
from metarun.tasks import Task, TaskBatch

# Evaluation mini-batches are drawn from a fixed seed, so a checkpoint scores the same every time.
EVAL_BATCH_SEED = 0


def mini_batches(n: int, size: int, count: int, generator: torch.Generator | None):
    """``count`` index batches of ``size``: passes over a shuffled 0..n-1, reshuffled when used up."""
    order, used = torch.randperm(n, generator=generator), 0
    for _ in range(count):
        if used + size > n:
            order, used = torch.randperm(n, generator=generator), 0
        yield order[used:used + min(size, n)]
        used += size


def carried_adam_step(params: list[torch.Tensor], squares: list[torch.Tensor], t: torch.Tensor,
                      lr: float, beta2: float = 0.999, eps: float = 1e-8):
    """Adam with beta1 = 0 on ``params``' gradients whose second moments ``squares`` and step count
    ``t`` (updated in place) live outside the task: the step to call after each backward pass."""
    @torch.no_grad()
    def step():
        t.add_(1)
        correction = 1 - beta2 ** t.double()  # a tensor: no device sync per inner step
        for p, square in zip(params, squares):
            square.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.sub_(lr * p.grad / ((square / correction).sqrt() + eps))
    return step


class Reptile(MetaLearner):
    bf16_breaks = ("its inner steps (about algo.inner_lr a weight) are below bf16's resolution of the "
                   "weights, so its inner loop hardly moves")

    def __init__(self, backbone: nn.Module, n_outputs: int, kind: str, cfg):
        super().__init__(kind)
        self.model = nn.Sequential(backbone, nn.Linear(backbone.out_features, n_outputs))
        self.has_batchnorm = batch_statistics_only(self.model)
        self.cfg = cfg
        self.transductive = self.has_batchnorm and cfg.transductive_bn
        # a checkpoint from before the key was trained with a fresh state for every task
        self.carries_adam_state = (cfg.inner_optimizer == "adam"
                                   and cfg.get("inner_optimizer_state", "fresh") == "carried")
        if self.carries_adam_state:
            # buffers, so that checkpoints and resumes hold them; named by the parameters' order
            # ('.' is not allowed in a buffer's name)
            for i, p in enumerate(self.model.parameters()):
                self.register_buffer(f"inner_adam_sq_{i}", torch.zeros_like(p))
            self.register_buffer("inner_adam_t", torch.zeros((), dtype=torch.long))

    def carried_adam_state(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        count = len(list(self.model.parameters()))
        return [getattr(self, f"inner_adam_sq_{i}") for i in range(count)], self.inner_adam_t

    def adapt(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int,
              generator: torch.Generator | None,
              keep_state: bool) -> tuple[dict[str, torch.Tensor], Metrics]:
        """phi: ``steps`` optimiser steps from theta on mini-batches of (x, y); the metrics of the
        last. ``keep_state``: a carried Adam state ends as the task left it (training) or as it was
        (testing)."""
        params = {k: v.detach().clone().requires_grad_() for k, v in self.model.named_parameters()}
        if self.carries_adam_state:
            squares, t = self.carried_adam_state()
            if not keep_state:
                squares, t = [s.clone() for s in squares], t.clone()
            step = carried_adam_step(list(params.values()), squares, t, self.cfg.inner_lr)
        elif self.cfg.inner_optimizer == "adam":
            # beta1 = 0 as in the paper: no momentum carried between mini-batches
            step = torch.optim.Adam(params.values(), lr=self.cfg.inner_lr, betas=(0.0, 0.999)).step
        else:
            step = torch.optim.SGD(params.values(), lr=self.cfg.inner_lr).step
        metrics = {}
        for index in mini_batches(len(x), batch_size, steps, generator):
            prediction = functional_call(self.model, params, (x[index],))
            loss = self.task_loss(prediction, y[index])
            for p in params.values():
                p.grad = None
            loss.backward()
            step()
            metrics = self.task_metrics(prediction.detach(), y[index])
        return {k: v.detach() for k, v in params.items()}, metrics

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        per_task = []
        theta = dict(self.model.named_parameters())
        for task in batch:
            x = torch.cat([task.support_x, task.query_x])
            y = torch.cat([task.support_y, task.query_y])
            phi, metrics = self.adapt(x, y, self.cfg.inner_steps, self.cfg.inner_batch, None,
                                      keep_state=True)
            for name, p in theta.items():
                step = (p.detach() - phi[name]) / len(batch)
                p.grad = step if p.grad is None else p.grad + step
            per_task.append(metrics)
        return mean_metrics(per_task)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        generator = torch.Generator().manual_seed(EVAL_BATCH_SEED)
        with torch.enable_grad():
            phi, _ = self.adapt(task.support_x, task.support_y, self.cfg.eval_inner_steps,
                                self.cfg.eval_inner_batch, generator, keep_state=False)

        def predict(x):
            return functional_call(self.model, phi, (x,))

        return predict_queries(self.model, predict, task,
                               per_query=self.has_batchnorm and not self.cfg.transductive_bn)
