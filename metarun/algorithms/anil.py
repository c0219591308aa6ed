"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals 2020, Sec. 4).

    z = f_body(x)                                                      (body: not adapted)
    head_i' = head - alpha * grad_head L_{T_i}^{support}(head(z))      (inner steps: head only)
    (body, head) <- (body, head) - beta * grad sum_i L_{T_i}^{query}(head_i'(f_body(x_query)))

MAML with the inner loop restricted to the final linear layer: the body is meta-learned by the
outer loop alone. Batch norm and ``algo.task_batching`` (task loop or ``torch.func.vmap``) follow
MAML (see ``maml`` and ``batch_norm``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from metarun.algorithms.base import MetaLearner, Metrics, mean_metrics
from metarun.algorithms.batch_norm import batch_statistics_only, predict_queries
from metarun.algorithms.inner_loop import backward_vmapped, inner_sgd, vmap_over_tasks
from metarun.tasks import Task, TaskBatch


class ANIL(MetaLearner):
    def __init__(self, backbone: nn.Module, n_outputs: int, kind: str, cfg):
        super().__init__(kind)
        self.body = backbone
        self.head = nn.Linear(backbone.out_features, n_outputs)
        self.has_batchnorm = batch_statistics_only(self.body)
        self.first_order = cfg.first_order
        self.inner_lr = cfg.inner_lr
        self.inner_steps = cfg.inner_steps
        self.eval_inner_steps = cfg.eval_inner_steps
        self.transductive_bn = cfg.transductive_bn
        self.transductive = self.has_batchnorm and cfg.transductive_bn
        self.task_batching = cfg.task_batching

    def adapt_head(self, support_features: torch.Tensor, support_y: torch.Tensor, steps: int,
                   create_graph: bool, partial: bool = False) -> dict[str, torch.Tensor]:
        return inner_sgd(self.head, dict(self.head.named_parameters()), support_features, support_y,
                         self.task_loss, self.inner_lr, steps, create_graph, partial)

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        if vmap_over_tasks(self.task_batching, self.body, batch.support_x.device):
            return self.meta_train_step_vmap(batch)
        per_task = []
        for task in batch:
            head = self.adapt_head(self.body(task.support_x), task.support_y, self.inner_steps,
                                   create_graph=not self.first_order)
            prediction = functional_call(self.head, head, (self.body(task.query_x),))
            (self.task_loss(prediction, task.query_y) / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)

    def meta_train_step_vmap(self, batch: TaskBatch) -> Metrics:
        def adapt_and_predict_queries(support_x, support_y, query_x):
            head = self.adapt_head(self.body(support_x), support_y, self.inner_steps,
                                   create_graph=not self.first_order, partial=True)
            return functional_call(self.head, head, (self.body(query_x),))

        return backward_vmapped(self, self.body, adapt_and_predict_queries, batch)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        support_features = self.body(task.support_x).detach()
        with torch.enable_grad():
            head = {k: v.detach() for k, v in
                    self.adapt_head(support_features, task.support_y, self.eval_inner_steps,
                                    create_graph=False).items()}

        def predict(x):
            return functional_call(self.head, head, (self.body(x),))

        return predict_queries(self.body, predict, task,
                               per_query=self.has_batchnorm and not self.transductive_bn)
