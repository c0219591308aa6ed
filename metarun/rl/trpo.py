"""Trust region policy optimisation's step (Schulman et al. 2015, Sec. 6 and appendix C), on any
differentiable surrogate loss and mean KL divergence of the parameters.

    direction s = -F^-1 g           (conjugate gradient on Fisher-vector products, F = Hessian of KL)
    step      = sqrt(2 max_kl / s'Fs) * s
    accept the largest step * ratio^k (k = 0, 1, ...) that lowers the loss with KL <= max_kl

The Fisher-vector products are exact (a double backward of the mean KL at the old parameters,
where its gradient is zero and its Hessian is the Fisher matrix) wherever the KL depends on the
parameters, which in MAML-TRPO is through the inner policy-gradient step. The step is computed on
flat vectors; ``average`` makes every process of a torchrun job take the same step from the mean
of their gradients, products and line-search values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from metarun.algorithms.conjugate_gradient import conjugate_gradient

Average = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrustRegion:
    max_kl: float = 0.01
    cg_iterations: int = 10
    damping: float = 1e-5  # added to F's diagonal: the products stay positive definite
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def trust_region_step(params: list[torch.Tensor], loss_and_kl: Callable[[bool], tuple[torch.Tensor, torch.Tensor]],
                      region: TrustRegion, average: Average = lambda t: t) -> dict[str, float]:
    """Moves ``params`` (in place) by one TRPO step on ``loss_and_kl``, which evaluates the
    surrogate loss and the mean KL (from the distributions of the old parameters) at the
    parameters' values of the moment, differentiably where its argument is true (the line
    search needs the values alone); returns the step's diagnostics. No step is taken when no
    candidate passes (then ``accepted`` is 0)."""
    loss, kl = loss_and_kl(True)
    gradient = average(flat(torch.autograd.grad(loss, params, retain_graph=True)))
    kl_gradient = flat(torch.autograd.grad(kl, params, create_graph=True))

    def fisher_vector_product(vector: torch.Tensor) -> torch.Tensor:
        product = flat(torch.autograd.grad(kl_gradient @ vector, params, retain_graph=True))
        return average(product) + region.damping * vector

    # the tolerance of the reference implementation (rllab's cg: squared residual 1e-10)
    direction = conjugate_gradient(lambda v: [fisher_vector_product(v[0])], [-gradient], region.cg_iterations,
                                   tolerance=1e-10)[0]
    curvature = direction @ fisher_vector_product(direction)
    full_step = direction * torch.sqrt(2 * region.max_kl / curvature.clamp_min(1e-12))
    expected = float(gradient @ full_step)  # first-order change of the loss: negative
    old = [p.detach().clone() for p in params]
    loss_before = float(average(loss.detach()))
    for tries in range(region.max_backtracks):
        fraction = region.backtrack_ratio ** tries
        set_flat(params, old, fraction * full_step)
        new_loss, new_kl = (float(average(v.detach())) for v in loss_and_kl(False))
        if new_loss < loss_before and new_kl <= region.max_kl:
            return {"kl": new_kl, "loss_improvement": loss_before - new_loss,
                    "expected_improvement": -expected * fraction, "step_fraction": fraction, "accepted": 1.0}
    set_flat(params, old, torch.zeros_like(full_step))
    return {"kl": 0.0, "loss_improvement": 0.0, "expected_improvement": -expected, "step_fraction": 0.0,
            "accepted": 0.0}


def set_flat(params: list[torch.Tensor], origin: list[torch.Tensor], step: torch.Tensor) -> None:
    """``params`` = ``origin`` + ``step`` (a flat vector), in place."""
    offset = 0
    with torch.no_grad():
        for p, start in zip(params, origin):
            p.copy_(start + step[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
