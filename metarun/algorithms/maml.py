"""MAML and first-order MAML (Finn, Abbeel & Levine 2017, Algorithm 2).

    for each task T_i in the meta-batch:
        theta_i' = theta - alpha * grad_theta L_{T_i}^{support}(f_theta)      (inner steps)
    theta <- theta - beta * grad_theta sum_i L_{T_i}^{query}(f_{theta_i'})   (outer step, trainer's optimiser)

Two ways through the meta-batch, the same gradient (``algo.task_batching``):
- loop: task by task, each task's graph freed before the next is built, so second-order MAML
  needs the memory of one task, not of the whole meta-batch; fastest on CPUs.
- vmap: every task at once with ``torch.func.vmap`` (one batched pass instead of a Python loop
  of small kernels); memory grows with the meta-batch; 10x faster on an H200 (26.5 it/s).
- auto: vmap on CUDA and for convolution-free models on a CPU, else the loop (``vmap_over_tasks``).

``algo.head_init=zero``: the zeroing trick of Kao, Chiu & Chen (ICLR 2022, "MAML is a noisy
contrastive learner in classification"): the output layer starts every task's inner loop at zero
instead of at a meta-learned value. A learned head is, across random label orders, only noise that
each task must first undo; from zero, one inner step writes each class's support features into
its row. With nothing of the head meta-learned, the number of ways may differ between
meta-training and test.

``algo.head_init=prototypes`` (``algo=protomaml``): ProtoMAML (Triantafillou et al., ICLR 2020,
"Meta-Dataset", Sec. 4): the output layer starts every task as the linear layer that equals
ProtoNet's classifier on the support set, w_k = 2 c_k, b_k = -|c_k|^2 for the prototype c_k (the
mean support feature of class k), since -|z - c_k|^2 = 2 c_k.z - |c_k|^2 - |z|^2 and |z|^2 is the
same for every class. The prototypes are computed with the meta-parameters, so the outer gradient
reaches the body through them as well (also first-order: only the inner gradients are constants).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from metarun.algorithms.base import MetaLearner, Metrics, mean_metrics
from metarun.algorithms.batch_norm import batch_statistics_only, predict_queries
from metarun.algorithms.inner_loop import Params, backward_vmapped, inner_sgd, vmap_over_tasks
from metarun.tasks import Task, TaskBatch


# algo.head_init values whose output layer every task builds anew, so nothing of it is meta-learned
HEADS_BUILT_PER_TASK = ("zero", "prototypes")


def keep_placeholder_head(head: nn.Linear, state_dict: dict, prefix: str, *_) -> None:
    """Loading a checkpoint into a learner whose head every task builds anew: the checkpoint's
    head is a placeholder with a row per way it was trained with, so the learner keeps its own
    (a checkpoint trained 5-way tests 20-way)."""
    for name, placeholder in head.named_parameters(recurse=False):
        state_dict[prefix + name] = placeholder.detach().clone()


class MAML(MetaLearner):
    def __init__(self, backbone: nn.Module, n_outputs: int, kind: str, cfg):
        super().__init__(kind)
        self.model = nn.Sequential(backbone, nn.Linear(backbone.out_features, n_outputs))
        self.has_batchnorm = batch_statistics_only(self.model)
        self.first_order = cfg.first_order
        self.init_step_sizes(cfg)
        self.inner_steps = cfg.inner_steps
        self.eval_inner_steps = cfg.eval_inner_steps
        self.transductive_bn = cfg.transductive_bn
        self.transductive = self.has_batchnorm and cfg.transductive_bn
        self.task_batching = cfg.task_batching
        self.head_init = cfg.head_init
        self.head_per_task = cfg.head_init in HEADS_BUILT_PER_TASK
        self.train_ways = cfg.episode.ways if self.head_per_task else None
        if self.head_per_task:  # kept (as zeros) so that checkpoints have one layout; never trained
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.head.requires_grad_(False)
            self.head.register_load_state_dict_pre_hook(keep_placeholder_head)

    @property
    def head(self) -> nn.Linear:
        return self.model[1]

    def initial_parameters(self, ways: int | None) -> Params:
        """Where a task's inner loop starts: the meta-parameters, with a zero output layer of
        ``ways`` rows under ``algo.head_init=zero`` (``ways`` is None otherwise; the prototype
        head is the task's own: ``with_task_head``)."""
        params = dict(self.model.named_parameters())
        if self.head_init == "zero":
            params["1.weight"] = self.head.weight.new_zeros(ways, self.head.in_features).requires_grad_()
            params["1.bias"] = self.head.bias.new_zeros(ways).requires_grad_()
        return params

    def with_task_head(self, params: Params, ways: int | None, support_x: torch.Tensor,
                       support_y: torch.Tensor) -> Params:
        """``params`` with the output layer that ProtoMAML builds from the task's support set
        (``algo.head_init=prototypes``); ``params`` themselves otherwise."""
        if self.head_init != "prototypes":
            return params
        body = {name[2:]: p for name, p in params.items() if name.startswith("0.")}
        features = functional_call(self.model[0], body, (support_x,))
        # (support, ways) one-hot, written as a comparison so that it also runs inside vmap
        members = (support_y[:, None] == torch.arange(ways, device=support_y.device)).to(features.dtype)
        prototypes = members.T @ features / members.sum(0)[:, None]
        return params | {"1.weight": 2 * prototypes, "1.bias": -(prototypes ** 2).sum(1)}

    def init_step_sizes(self, cfg) -> None:
        self.inner_lr = cfg.inner_lr

    def step_sizes(self) -> float | dict[str, torch.Tensor]:
        """The inner learning rate alpha (Meta-SGD replaces it by learned per-parameter rates)."""
        return self.inner_lr

    def adapt(self, task: Task, ways: int | None, steps: int, create_graph: bool):
        start = self.with_task_head(self.initial_parameters(ways), ways, task.support_x, task.support_y)
        return inner_sgd(self.model, start, task.support_x, task.support_y, self.task_loss, self.step_sizes(),
                         steps, create_graph, partial=self.head_init == "prototypes")

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        if vmap_over_tasks(self.task_batching, self.model, batch.support_x.device):
            return self.meta_train_step_vmap(batch)
        per_task = []
        for task in batch:
            fast = self.adapt(task, self.train_ways, self.inner_steps, create_graph=not self.first_order)
            prediction = functional_call(self.model, fast, (task.query_x,))
            (self.task_loss(prediction, task.query_y) / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)

    def meta_train_step_vmap(self, batch: TaskBatch) -> Metrics:
        params, step_sizes = self.initial_parameters(self.train_ways), self.step_sizes()

        def adapt_and_predict_queries(support_x, support_y, query_x):
            start = self.with_task_head(params, self.train_ways, support_x, support_y)
            fast = inner_sgd(self.model, start, support_x, support_y, self.task_loss, step_sizes,
                             self.inner_steps, create_graph=not self.first_order, partial=True)
            return functional_call(self.model, fast, (query_x,))

        return backward_vmapped(self, self.model, adapt_and_predict_queries, batch)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        ways = int(task.support_y.max()) + 1 if self.head_per_task else None  # labels are 0..ways-1
        with torch.enable_grad():
            fast = {k: v.detach() for k, v in
                    self.adapt(task, ways, self.eval_inner_steps, create_graph=False).items()}
        return predict_queries(self.model, lambda x: functional_call(self.model, fast, (x,)), task,
                               per_query=self.has_batchnorm and not self.transductive_bn)
