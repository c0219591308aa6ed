"""MAML++ (Antoniou, Edwards & Storkey, ICLR 2019, "How to train your MAML", Sec. 4).

    for each task T_i, for k = 0 .. K-1:
        theta_i^{k+1} = theta_i^k - alpha_{l,k} * grad L_{T_i}^{support}(f_{theta_i^k}; BN_k)   (LSLR, BNWB)
        L_i^k = L_{T_i}^{query}(f_{theta_i^{k+1}}; BN_k)
    theta, alpha, BN <- Adam(grad sum_i sum_k v_k L_i^k)       (MSL; cosine-annealed rate: CA)

MAML (``maml.py``) with the paper's changes, each a key of ``algo/mamlpp.yaml``:
- **MSL**, multi-step loss: the query loss after every inner step enters the meta-loss with
  weight v_k. The weights start equal and move linearly to the last step over the first
  ``multi_step_loss_fraction`` of training (the authors' code: 10 of 100 epochs); the earlier
  steps keep at least 0.03/K. After that, the last step's query loss alone.
- **DA**, derivative-order annealing: first-order meta-gradients for the first
  ``first_order_fraction`` of training, second order after.
- **BNWB**, per-step batch-norm weights and biases: every inner step k normalises with its own
  affine parameters, meta-learned and held during the inner loop (``PerStepBatchNorm``).
- **BNRS**, per-step running statistics: not kept. The authors' code records them but
  normalises with the batch's statistics in training and at test alike (``training=True``), so
  they never change an output; metarun normalises as MAML does (``algo.transductive_bn``).
- **LSLR**, a learned inner rate per parameter tensor and inner step, from ``inner_lr``.
- **CA**, the outer rate on a cosine: the trainer's ``algo.scheduler`` (name cosine, end_factor).

The training progress (for MSL and DA) is the update count, a buffer saved with the checkpoint,
over ``trainer.max_steps`` as it stands (``trainer.fit_max_steps`` sets it once the run has begun).
The inner steps at test are those of training: a rate and a batch norm per step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarun.algorithms.base import Metrics, mean_metrics
from metarun.algorithms.batch_norm import BatchStatisticsNorm, predict_queries, vectorised
from metarun.algorithms.inner_loop import Params, inner_sgd, vmap_over_tasks
from metarun.algorithms.maml import MAML
from metarun.tasks import Task, TaskBatch

# the authors' code: the earlier steps' weights fall to no less than this over K
MINIMUM_EARLIER_STEP_WEIGHT = 0.03


class PerStepBatchNorm(BatchStatisticsNorm):
    """Batch norm with batch statistics and one pair of affine parameters per inner step
    (``step_weight``, ``step_bias``: steps x channels); ``weight`` and ``bias`` are the rows of
    the current step (``at_step``), so code that reads a batch norm's ``weight`` (Conv4's folded
    first block, the vmapped form) runs unchanged."""

    def __init__(self, batch_norm: BatchStatisticsNorm, steps: int):
        nn.Module.__init__(self)
        self.step_weight = nn.Parameter(batch_norm.weight.detach().repeat(steps, 1))
        self.step_bias = nn.Parameter(batch_norm.bias.detach().repeat(steps, 1))
        self.eps, self.vectorised, self.step = batch_norm.eps, False, 0

    @property
    def weight(self) -> torch.Tensor:
        return self.step_weight[self.step]

    @property
    def bias(self) -> torch.Tensor:
        return self.step_bias[self.step]


def per_step_batch_norm(model: nn.Module, steps: int) -> None:
    """Replace every ``BatchStatisticsNorm`` of ``model`` (MAML's batch norms) by a
    ``PerStepBatchNorm`` of ``steps`` steps."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is BatchStatisticsNorm:
                setattr(parent, name, PerStepBatchNorm(child, steps))


@contextmanager
def at_step(model: nn.Module, step: int) -> Iterator[None]:
    """Every ``PerStepBatchNorm`` of ``model`` uses the affine parameters of inner step ``step``."""
    norms = [module for module in model.modules() if isinstance(module, PerStepBatchNorm)]
    for norm in norms:
        norm.step = step
    try:
        yield
    finally:
        for norm in norms:
            norm.step = 0


def multi_step_loss_weights(steps: int, progress: float) -> list[float]:
    """v_0 .. v_{K-1} at ``progress`` (0 to 1) through the multi-step-loss phase: equal at 0,
    moving linearly to the last step, the earlier ones no lower than 0.03 / K; they sum to 1."""
    floor = MINIMUM_EARLIER_STEP_WEIGHT / steps
    earlier = max((1 - progress) / steps, floor)
    last = min((1 + (steps - 1) * progress) / steps, 1 - (steps - 1) * floor)
    return [earlier] * (steps - 1) + [last]


class MAMLPlusPlus(MAML):
    def __init__(self, backbone: nn.Module, n_outputs: int, kind: str, cfg, trainer_cfg):
        super().__init__(backbone, n_outputs, kind, cfg)
        if cfg.eval_inner_steps != cfg.inner_steps:
            raise ValueError("MAML++ adapts at test with its training's inner steps")
        per_step_batch_norm(self.model, self.inner_steps)
        self.multi_step_loss_fraction = float(cfg.multi_step_loss_fraction)
        self.first_order_fraction = float(cfg.first_order_fraction)
        self.trainer_cfg = trainer_cfg
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # checkpointed with the model

    def init_step_sizes(self, cfg) -> None:
        """LSLR: one learned rate per parameter tensor and inner step (the batch norms' affine
        parameters are meta-learned per step instead, and held in the inner loop)."""
        self.adapted_names = [name for name, _ in self.model.named_parameters()
                              if not isinstance(self.model.get_submodule(name.rpartition(".")[0]), BatchStatisticsNorm)]
        self.step_rates = nn.ParameterList(
            nn.Parameter(torch.full((cfg.inner_steps,), float(cfg.inner_lr))) for _ in self.adapted_names)

    def step_sizes_at(self, step: int) -> dict[str, torch.Tensor | float]:
        rates = dict.fromkeys((name for name, _ in self.model.named_parameters()), 0.0)
        return rates | {name: rate[step] for name, rate in zip(self.adapted_names, self.step_rates)}

    def progress(self) -> float:
        return int(self.updates) / max(1, int(self.trainer_cfg.max_steps))

    def step_weights(self) -> list[float]:
        """The multi-step loss's weights now; the last step's alone once its phase is over."""
        if self.multi_step_loss_fraction > 0 and self.progress() < self.multi_step_loss_fraction:
            return multi_step_loss_weights(self.inner_steps, self.progress() / self.multi_step_loss_fraction)
        return [0.0] * (self.inner_steps - 1) + [1.0]

    def adapt_steps(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                    create_graph: bool, partial: bool) -> Iterator[tuple[int, Params]]:
        """The task's parameters after each inner step k, with its step index."""
        for step in range(self.inner_steps):
            with at_step(self.model, step):
                params = inner_sgd(self.model, params, support_x, support_y, self.task_loss,
                                   self.step_sizes_at(step), 1, create_graph, partial=partial)
            yield step, params

    def query_predictions(self, params: Params, step: int, query_x: torch.Tensor) -> torch.Tensor:
        with at_step(self.model, step):
            return functional_call(self.model, params, (query_x,))

    def task_meta_loss(self, support_x, support_y, query_x, query_y, weights: list[float], create_graph: bool,
                       partial: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_k v_k L^k of one task, and its query predictions after the last step."""
        start = self.with_task_head(self.initial_parameters(self.train_ways), self.train_ways, support_x, support_y)
        loss = 0.0
        for step, params in self.adapt_steps(start, support_x, support_y, create_graph, partial):
            if weights[step] or step == self.inner_steps - 1:
                prediction = self.query_predictions(params, step, query_x)
                loss = loss + weights[step] * self.task_loss(prediction, query_y)
        return loss, prediction

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        weights = self.step_weights()
        second_order = not self.first_order and self.progress() >= self.first_order_fraction
        self.updates += 1
        if vmap_over_tasks(self.task_batching, self.model, batch.support_x.device):
            return self.meta_train_step_vmap(batch, weights, second_order)
        per_task = []
        for task in batch:
            loss, prediction = self.task_meta_loss(task.support_x, task.support_y, task.query_x, task.query_y,
                                                   weights, second_order, partial=False)
            (loss / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)

    def meta_train_step_vmap(self, batch: TaskBatch, weights: list[float], second_order: bool) -> Metrics:
        def one_task(support_x, support_y, query_x, query_y):
            return self.task_meta_loss(support_x, support_y, query_x, query_y, weights, second_order, partial=True)

        with vectorised(self.model):
            losses, predictions = vmap(one_task, randomness="different")(
                batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        losses.mean().backward()
        return self.task_metrics(predictions.detach().flatten(0, 1), batch.query_y.flatten(0, 1))

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        ways = int(task.support_y.max()) + 1 if self.head_per_task else None  # labels are 0..ways-1
        start = self.with_task_head(self.initial_parameters(ways), ways, task.support_x, task.support_y)
        with torch.enable_grad():
            *_, (last, fast) = self.adapt_steps(start, task.support_x, task.support_y, False,
                                                partial=self.head_init == "prototypes")
        fast = {k: v.detach() for k, v in fast.items()}
        with at_step(self.model, last):
            return predict_queries(self.model, lambda x: functional_call(self.model, fast, (x,)), task,
                                   per_query=self.has_batchnorm and not self.transductive_bn)
