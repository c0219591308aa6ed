"""Meta-Learner LSTM (Ravi & Larochelle 2017, Sec. 3 and Algorithm 1).

The learner's parameters theta are the cell state of an LSTM that reads the learner's gradients:

    f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F)      forget gate: how much of theta to keep
    i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)      input gate: a per-coordinate learning rate
    theta_t = f_t * theta_{t-1} - i_t * grad_t                the cell update: a learned gradient step

for t = 1..T on the support set, then the query loss of theta_T is back-propagated to the
meta-learner and to theta_0, the meta-learned initial cell state (the learner's initialisation).
All weights are shared across the learner's coordinates. As in the paper:
- h_t is the hidden state of a first LSTM (``hidden`` units) reading, per coordinate, the
  gradient and the loss preprocessed as in Andrychowicz et al. 2016:
  x -> (log|x| / p, sign x) if |x| >= e^-p, else (-1, e^p x), with p = 10;
- grad_t and the loss are inputs, not functions of the meta-parameters: second derivatives
  are dropped;
- the forget bias starts high and the input bias low, so theta starts close to theta_0 and
  moves like a small gradient step;
- batch norm uses batch statistics (no running averages), and ``transductive_bn`` says whether
  test queries are normalised with their own statistics (as MAML's).

Layout: the learner's coordinates run along the columns, (units, n), not the rows. The same
function as ``nn.LSTMCell`` on (n, units) rows, but each gate is then a contiguous block, so its
sigmoid and tanh run vectorised: 1.9-2.0x the meta-iterations of ``nn.LSTMCell``'s strided gate
columns for a 64-filter Conv4 on 2 CPU cores (docs/learners/metalstm.md). The loss input is the
same for every coordinate, so its share of the gates is one column added to all.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from metarun.algorithms.base import MetaLearner, Metrics, mean_metrics
from metarun.algorithms.batch_norm import batch_statistics_only, predict_queries
from metarun.tasks import Task, TaskBatch

PREPROCESS_P = 10.0


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (2, N): log-magnitude and sign for large values, (-1, scaled value) for small."""
    big = x.abs() >= math.exp(-PREPROCESS_P)
    magnitude = torch.where(big, x.abs().clamp_min(1e-38).log() / PREPROCESS_P, torch.full_like(x, -1.0))
    direction = torch.where(big, x.sign(), x * math.exp(PREPROCESS_P))
    return torch.stack([magnitude, direction])


def read_gradient(reader: nn.LSTMCell, gradient: torch.Tensor, loss: torch.Tensor,
                  state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``reader`` on every coordinate, state (h, c) as (hidden, n): the inputs of a
    coordinate are its preprocessed gradient and the preprocessed loss, shared by all."""
    h, c = state
    weight_gradient, weight_loss = reader.weight_ih[:, :2], reader.weight_ih[:, 2:]
    shared = reader.bias_ih + reader.bias_hh + weight_loss @ preprocess(loss.reshape(1))[:, 0]
    gates = torch.addmm(shared[:, None], torch.cat([weight_gradient, reader.weight_hh], 1),
                        torch.cat([preprocess(gradient), h]))
    i, f, g, o = gates.chunk(4)  # nn.LSTMCell's order: input, forget, cell, output
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class MetaLSTMCell(nn.Module):
    """The gates and cell update above, for n coordinates at once (h as (hidden, n))."""

    def __init__(self, hidden: int, forget_bias: list[float], input_bias: list[float]):
        super().__init__()
        self.forget = nn.Linear(hidden + 2, 1)
        self.input = nn.Linear(hidden + 2, 1)
        for gate in (self.forget, self.input):
            nn.init.uniform_(gate.weight, -0.01, 0.01)
        nn.init.uniform_(self.forget.bias, *forget_bias)
        nn.init.uniform_(self.input.bias, *input_bias)

    def forward(self, h, theta, grad, f_prev, i_prev):
        """Each gate's weights are for [h, theta, its own previous value]."""
        weight = torch.cat([self.forget.weight, self.input.weight])  # (2, hidden + 2)
        bias = torch.cat([self.forget.bias, self.input.bias])
        from_h = torch.addmm(bias[:, None], weight[:, :-2], h)  # (2, n)
        f = torch.sigmoid(from_h[0] + weight[0, -2] * theta + weight[0, -1] * f_prev)
        i = torch.sigmoid(from_h[1] + weight[1, -2] * theta + weight[1, -1] * i_prev)
        return f * theta - i * grad, f, i


class MetaLSTM(MetaLearner):
    def __init__(self, backbone: nn.Module, n_outputs: int, cfg):
        super().__init__("image")
        self.model = nn.Sequential(backbone, nn.Linear(backbone.out_features, n_outputs))
        self.has_batchnorm = batch_statistics_only(self.model)
        self.reader = nn.LSTMCell(4, cfg.hidden)
        self.cell = MetaLSTMCell(cfg.hidden, list(cfg.forget_bias), list(cfg.input_bias))
        self.shapes = {k: p.shape for k, p in self.model.named_parameters()}
        self.sizes = [math.prod(s) for s in self.shapes.values()]
        self.cfg = cfg
        self.transductive = self.has_batchnorm and cfg.transductive_bn

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.view(s) for (k, s), v in zip(self.shapes.items(), theta.split(self.sizes))}

    def learner_loss_and_grad(self, theta: torch.Tensor, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """The support loss at theta and its gradient, both as plain inputs (no second order)."""
        point = theta.detach().requires_grad_()
        loss = self.task_loss(functional_call(self.model, self.unflatten(point), (x,)), y)
        grad, = torch.autograd.grad(loss, point)
        return loss.detach(), grad

    def adapt(self, task: Task, steps: int) -> torch.Tensor:
        """theta_T: ``steps`` meta-LSTM updates from theta_0 on the support set."""
        theta = torch.cat([p.reshape(-1) for p in self.model.parameters()])
        n = theta.numel()
        state = (theta.new_zeros(self.cfg.hidden, n), theta.new_zeros(self.cfg.hidden, n))
        f, i = theta.new_zeros(n), theta.new_zeros(n)
        for _ in range(steps):
            with torch.enable_grad():
                loss, grad = self.learner_loss_and_grad(theta, task.support_x, task.support_y)
            state = read_gradient(self.reader, grad, loss, state)
            theta, f, i = self.cell(state[0], theta, grad, f, i)
        return theta

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        per_task = []
        for task in batch:
            theta = self.adapt(task, self.cfg.inner_steps)
            prediction = functional_call(self.model, self.unflatten(theta), (task.query_x,))
            (self.task_loss(prediction, task.query_y) / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), task.query_y))
        return mean_metrics(per_task)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        params = self.unflatten(self.adapt(task, self.cfg.eval_inner_steps).detach())

        def predict(x):
            return functional_call(self.model, params, (x,))

        return predict_queries(self.model, predict, task,
                               per_query=self.has_batchnorm and not self.cfg.transductive_bn)
