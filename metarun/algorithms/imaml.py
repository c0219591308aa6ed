"""iMAML, implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019, Algorithms 1 and 2).

    phi_i = argmin_phi L_{T_i}^{support}(phi) + lambda/2 |phi - theta|^2      (inner: proximal, K GD steps)
    g_i   = grad_phi L_{T_i}^{query}(phi_i)
    v_i   = (I + H_i / lambda)^-1 g_i,  H_i = Hessian of L^{support} at phi_i  (conjugate gradient)
    theta <- theta - beta * sum_i v_i                                       (outer step, trainer's optimiser)

The proximal term keeps the adapted parameters near the meta-parameters, and at the inner
optimum it makes their derivative in theta exactly (I + H / lambda)^-1: the meta-gradient needs
only the end point of the inner loop, not its path. So the inner loop is run without a graph
(any number of steps for the memory of one), and the meta-gradient costs ``algo.cg_steps``
Hessian-vector products. The inverse is applied by conjugate gradient, which needs
I + H / lambda positive definite (lambda above the support loss's most negative curvature).

The tasks go one by one (``algo.task_batching`` is not used); batch norm and testing are MAML's,
adapted by the same proximal inner loop.
"""
from __future__ import annotations


import torch
from torch.func import functional_call

from metarun.algorithms.base import Metrics, mean_metrics
from metarun.algorithms.conjugate_gradient import Vectors, conjugate_gradient
from metarun.algorithms.inner_loop import Params
from metarun.algorithms.maml import MAML
from metarun.tasks import Task, TaskBatch

class IMAML(MAML):
    def init_step_sizes(self, cfg) -> None:
        super().init_step_sizes(cfg)
        self.proximal = cfg.proximal_lambda
        self.cg_steps = cfg.cg_steps

    def support_loss(self, params: Params, task: Task) -> torch.Tensor:
        return self.task_loss(functional_call(self.model, params, (task.support_x,)), task.support_y)

    def adapt(self, task: Task, ways: int | None, steps: int, create_graph: bool) -> Params:
        """``steps`` steps of gradient descent on the support loss plus the proximal term, from
        the meta-parameters, with no graph kept (``create_graph`` is never needed)."""
        anchor = {name: p.detach() for name, p in self.model.named_parameters()}
        params = {name: p.clone().requires_grad_() for name, p in anchor.items()}
        with torch.enable_grad():
            for _ in range(steps):
                grads = torch.autograd.grad(self.support_loss(params, task), list(params.values()))
                params = {name: (p - self.inner_lr * (g + self.proximal * (p - anchor[name]))).detach().requires_grad_()
                          for (name, p), g in zip(params.items(), grads)}
        return params

    def implicit_gradient(self, task: Task, params: Params, query_gradient: Vectors) -> Vectors:
        """(I + H / lambda)^-1 applied to ``query_gradient``, H the support loss's Hessian at
        ``params``, by ``cg_steps`` of conjugate gradient on Hessian-vector products."""
        support_gradient = torch.autograd.grad(self.support_loss(params, task), list(params.values()),
                                               create_graph=True)

        def apply(vectors: Vectors) -> Vectors:
            hessian_vectors = torch.autograd.grad(support_gradient, list(params.values()), grad_outputs=vectors,
                                                  retain_graph=True)
            return [v + h / self.proximal for v, h in zip(vectors, hessian_vectors)]

        return conjugate_gradient(apply, query_gradient, self.cg_steps)

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        per_task = []
        meta_parameters = list(self.model.parameters())
        for task in batch:
            params = self.adapt(task, None, self.inner_steps, create_graph=False)
            prediction = functional_call(self.model, params, (task.query_x,))
            query_gradient = torch.autograd.grad(self.task_loss(prediction, task.query_y), list(params.values()))
            for p, g in zip(meta_parameters, self.implicit_gradient(task, params, list(query_gradient))):
                g = g.detach() / len(batch)
                p.grad = g if p.grad is None else p.grad + g
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)
