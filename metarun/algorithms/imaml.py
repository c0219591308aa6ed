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

Two forms of the inner loop and of the inverse (``algo.inner_form``, ``algo.cg_damping``,
``algo.lambda_damping``): the paper's, above, and the authors' released Omniglot code
(github.com/aravindr93/imaml_dev, ``examples/omniglot_implicit_maml.py`` and
``implicit_maml/learner_model.py``), whose inner loop takes its steps on the support loss alone and
then one step on the proximal term alone (``pull_back``: phi <- phi - alpha lambda (phi - theta)),
and whose conjugate gradient applies (1 + cg_damping) I + H / (lambda + lambda_damping), damped
with 1.0 and 10.0: a far better conditioned system than I + H / lambda, at the price of a
meta-gradient nearer first-order MAML's. Its test adapts with plain gradient descent
(``algo.eval_proximal_lambda=0``; ``measure_accuracy.py --lam 0.0``).

The tasks go one by one (``algo.task_batching`` is not used); batch norm and testing are MAML's.
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
        self.eval_proximal = cfg.eval_proximal_lambda
        self.pull_back = cfg.inner_form == "pull_back"
        self.cg_steps = cfg.cg_steps
        self.cg_damping = cfg.cg_damping
        self.lambda_damping = cfg.lambda_damping

    def support_loss(self, params: Params, task: Task) -> torch.Tensor:
        return self.task_loss(functional_call(self.model, params, (task.support_x,)), task.support_y)

    def adapt(self, task: Task, ways: int | None, steps: int, create_graph: bool) -> Params:
        """``steps`` steps of gradient descent from the meta-parameters, with no graph kept
        (``create_graph`` is never needed): on the support loss plus the proximal term, or
        (``pull_back``) on the support loss, then one step on the proximal term. The proximal
        weight is lambda in meta-training, ``eval_proximal_lambda`` at test."""
        proximal = self.proximal if self.training else self.eval_proximal
        anchor = {name: p.detach() for name, p in self.model.named_parameters()}
        params = {name: p.clone().requires_grad_() for name, p in anchor.items()}
        in_step = 0.0 if self.pull_back else proximal
        with torch.enable_grad():
            for _ in range(steps):
                grads = torch.autograd.grad(self.support_loss(params, task), list(params.values()))
                params = {name: (p - self.inner_lr * (g + in_step * (p - anchor[name]))).detach().requires_grad_()
                          for (name, p), g in zip(params.items(), grads)}
        if self.pull_back:
            params = {name: (p - self.inner_lr * proximal * (p - anchor[name])).detach().requires_grad_()
                      for name, p in params.items()}
        return params

    def implicit_gradient(self, task: Task, params: Params, query_gradient: Vectors) -> Vectors:
        """((1 + cg_damping) I + H / (lambda + lambda_damping))^-1 applied to ``query_gradient``
        (the paper's (I + H / lambda)^-1 with both dampings 0), H the support loss's Hessian at
        ``params``, by ``cg_steps`` of conjugate gradient on Hessian-vector products."""
        support_gradient = torch.autograd.grad(self.support_loss(params, task), list(params.values()),
                                               create_graph=True)

        def apply(vectors: Vectors) -> Vectors:
            hessian_vectors = torch.autograd.grad(support_gradient, list(params.values()), grad_outputs=vectors,
                                                  retain_graph=True)
            return [(1 + self.cg_damping) * v + h / (self.proximal + self.lambda_damping)
                    for v, h in zip(vectors, hessian_vectors)]

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
