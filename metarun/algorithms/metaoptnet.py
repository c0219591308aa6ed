"""MetaOptNet-SVM (Lee, Maji, Ravichandran & Soatto, CVPR 2019, "Meta-Learning with
Differentiable Convex Optimization", Sec. 3): each episode's classifier is a multi-class linear SVM
(Crammer & Singer 2001) on the support embeddings, solved in its dual and differentiated through.

    X = f(support) (n x e),  Y = one-hot support labels (n x ways),  G = X X^T + r I
    dual:  max_A  -1/2 tr(A^T G A) + sum_n A[n, y_n]
           s.t.   A[n,k] <= C [k = y_n],  sum_k A[n,k] = 0  for every n
    w_k = sum_n A[n,k] x_n,   logits(query) = gamma * f(query) W
    (with r = 0 the paper's Eq. 8, -1/2 tr(A^T G A) = -1/2 sum_k |sum_n A[n,k] x_n|^2; the
    authors' code adds r = 1, algo.kernel_ridge)
    loss = cross-entropy of the query examples; f and the scale gamma are meta-learned

Solving it. With B = C Y - A, every row of B lies on the simplex {b >= 0, sum b = C}, so the dual
is a quadratic program over a product of simplices. Given which entries of B are zero at the
optimum (the active set), the others solve a linear system (below); a primal-dual active-set
method finds that set in a few solves (accelerated projected gradient where it would cycle), and
the result is checked by the QP's optimality conditions. No general QP solver: the authors use
qpth's interior point method for a fixed 15 iterations.

Differentiating it. At the solution the zero entries of B stay zero under a small change of the
features (the active set), and the other entries solve the QP's linear optimality (KKT) system
restricted to them. That system is solved once more with autograd on: its solution is the one
the solver found, and its gradient is the QP's exact implicit gradient (what OptNet's backward pass
computes, here in closed form). The Hessian is block diagonal over classes, so the solve is one
n x n system per class and one for the n multipliers of the equality constraints.

Batch norm as in ProtoNet: batch statistics while meta-training, running averages at test time.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, PerImageFeatures
from metarun.tasks import Task

log = logging.getLogger("metarun")


def project_rows_to_simplex(v: torch.Tensor, total: float) -> torch.Tensor:
    """Each row of ``v`` projected (Euclidean) onto {b >= 0, sum b = total}: subtract the
    threshold that leaves ``total`` in the positive part (Held, Wolfe & Crowder 1974)."""
    ordered = v.sort(dim=1, descending=True).values
    excess = ordered.cumsum(1) - total
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    kept = (ordered - excess / ranks > 0).sum(1, keepdim=True)  # how many entries stay positive
    threshold = excess.gather(1, kept - 1) / kept
    return (v - threshold).clamp_min(0)


def dual_gradient(gram: torch.Tensor, targets: torch.Tensor, c: float, b: torch.Tensor) -> torch.Tensor:
    """The gradient in B of the dual's objective (to minimise) 1/2 tr(A^T G A) - sum_n A[n, y_n]."""
    return targets - c * (gram @ targets) + gram @ b


@torch.no_grad()
def solve_dual(gram: torch.Tensor, targets: torch.Tensor, c: float, tolerance: float,
               max_iterations: int, rounds: int = 20) -> torch.Tensor:
    """B at the dual's optimum, to ``tolerance`` in its optimality (KKT) conditions. First the
    primal-dual active-set method (Hintermueller, Ito & Kunisch 2003): guess which entries of B
    are zero, solve the KKT system on the others, take as the next guess the entries that the
    solution's signs and multipliers point to; from B = C Y it ends in 1-10 rounds of one
    solve each. It may cycle; then FISTA (``fista_dual``) finds the active set instead."""
    free = targets > 0
    for _ in range(rounds):
        candidate = active_set_solution(gram, targets, c, free)
        violation, slack = kkt_violation(gram, targets, c, candidate)
        if violation < tolerance:
            return candidate
        guess = candidate - slack > 0  # stays free where positive, frees a zero with a negative multiplier
        if torch.equal(guess, free) or not guess.any(1).all():
            break
        free = guess
    return fista_dual(gram, targets, c, tolerance, max_iterations)


@torch.no_grad()
def fista_dual(gram: torch.Tensor, targets: torch.Tensor, c: float, tolerance: float,
               max_iterations: int, check_every: int = 10) -> torch.Tensor:
    """B at the dual's optimum by FISTA, restarted whenever its momentum points uphill (O'Donoghue
    & Candes 2015); every ``check_every`` iterations the active set reached is tried in
    ``active_set_solution``, and its B returned once it meets the KKT conditions (after
    ``max_iterations``, the last iterate, with a warning that says how far from them it is).
    Slower than the active-set rounds (10x at 60 ways), but it cannot cycle."""
    step = 1.0 / float(torch.linalg.eigvalsh(gram)[-1])
    b = c * targets  # feasible: A = 0
    momentum_point, t = b, 1.0
    for iteration in range(1, max_iterations + 1):
        if iteration % check_every == 0:
            candidate = active_set_solution(gram, targets, c, b > 0)
            if kkt_violation(gram, targets, c, candidate)[0] < tolerance:
                return candidate
        gradient = dual_gradient(gram, targets, c, momentum_point)
        following = project_rows_to_simplex(momentum_point - step * gradient, c)
        change = following - b
        if float((gradient * change).sum()) > 0:  # uphill: restart from b
            momentum_point, t = b, 1.0
            continue
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum_point = following + ((t - 1) / t_next) * change
        b, t = following, t_next
    violation = kkt_violation(gram, targets, c, b)[0]
    log.warning(f"MetaOptNet: the SVM dual of an episode met its optimality conditions only to {violation:.2g} "
                f"(algo.qp_tolerance={tolerance:g}) after algo.qp_max_iterations={max_iterations}; its classifier "
                "is that close to the SVM's. Raise algo.qp_max_iterations if this repeats")
    return b


def kkt_violation(gram: torch.Tensor, targets: torch.Tensor, c: float, b: torch.Tensor) -> tuple[float, torch.Tensor]:
    """How far ``b`` (rows summing to C, zero outside its support) is from the dual's optimum: its
    most negative entry over C, or the largest breach of stationarity (the gradient equal to the
    row's multiplier where b is free, no smaller where b = 0) over the gradient's scale; and the
    slack (gradient minus multiplier) on the zero entries."""
    gradient = dual_gradient(gram, targets, c, b)
    free = b != 0
    multiplier = (gradient * free).sum(1, keepdim=True) / free.sum(1, keepdim=True).clamp_min(1)
    slack = gradient - multiplier
    scale = 1 + c * float(gram.diagonal().max())
    violation = max(float(-b.min()) / c, float((slack * free).abs().max()) / scale,
                    float(-(slack * ~free).min()) / scale)
    return violation, slack * ~free


def active_set_solution(gram: torch.Tensor, targets: torch.Tensor, c: float, free: torch.Tensor) -> torch.Tensor:
    """B from the KKT system of the dual with the entries outside ``free`` (n x ways, bool) held
    at zero: for class k with free rows F, G[F,F] B[F,k] = r[F,k] + nu[F] with r = C G Y - Y, and
    sum_k B[n,k] = C fixes the multipliers nu. Differentiable in ``gram``."""
    n, ways = targets.shape
    mask = free.to(gram.dtype).T  # ways x n
    eye = torch.eye(n, device=gram.device, dtype=gram.dtype)
    # per class: G on the free rows and columns, the identity elsewhere (so each block inverts)
    blocks = mask[:, :, None] * mask[:, None, :] * gram + torch.diag_embed(1 - mask)
    residual = (c * (gram @ targets) - targets).T * mask  # ways x n
    solved = torch.linalg.solve(blocks, torch.cat([torch.diag_embed(mask), residual[:, :, None]], 2))
    coupling, particular = solved[:, :, :n] * mask[:, :, None], solved[:, :, n] * mask
    multipliers = torch.linalg.solve(coupling.sum(0), c - particular.sum(0))
    return (particular + coupling @ multipliers).T * free


def svm_dual_weights(support: torch.Tensor, targets: torch.Tensor, c: float, kernel_ridge: float,
                     tolerance: float = 1e-9, max_iterations: int = 2000) -> torch.Tensor:
    """The Crammer-Singer SVM's weights W (e x ways) = X^T A for support features X (n x e) and
    one-hot ``targets`` (n x ways), differentiable in X. ``kernel_ridge`` is added to the Gram
    matrix's diagonal, as the authors' code adds 1 (a squared-slack term): it keeps the dual
    strongly convex when the support set has more examples than feature dimensions."""
    gram = support @ support.T + kernel_ridge * torch.eye(len(support), device=support.device, dtype=support.dtype)
    b = solve_dual(gram.detach(), targets, c, tolerance, max_iterations)
    b = active_set_solution(gram, targets, c, b > 0)
    return support.T @ (c * targets - b)


class MetaOptNet(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__("image")
        self.backbone = backbone
        self.svm_c, self.kernel_ridge = float(cfg.svm_c), float(cfg.kernel_ridge)
        self.tolerance, self.max_iterations = float(cfg.qp_tolerance), int(cfg.qp_max_iterations)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.scale_init)))  # gamma, kept positive
        self.label_smoothing = cfg.label_smoothing
        self.rotate_support = cfg.rotate_support

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # in fp64: the active set and the KKT solve need the digits that bf16 and fp32 lose
        with torch.autocast(support.device.type, enabled=False):
            support64 = support.double()
            targets = F.one_hot(task.support_y, int(task.support_y.max()) + 1).double()
            weights = svm_dual_weights(support64, targets, self.svm_c, self.kernel_ridge, self.tolerance,
                                       self.max_iterations)
            return self.log_scale.exp() * (query.float() @ weights.float())
