"""Conjugate gradient on lists of tensors: iMAML's implicit gradient and TRPO's natural-gradient
direction both apply an inverse (I + H / lambda, the Fisher matrix) this way."""
from __future__ import annotations

from typing import Callable

import torch

Vectors = list[torch.Tensor]


def conjugate_gradient(apply: Callable[[Vectors], Vectors], b: Vectors, steps: int,
                       tolerance: float = 1e-20) -> Vectors:
    """``steps`` iterations of conjugate gradient towards x with apply(x) = b, from x = 0, for a
    symmetric positive definite operator on lists of tensors; stops early once the squared
    residual norm is at most ``tolerance`` (the default: solved to float precision)."""
    def dot(u: Vectors, w: Vectors) -> torch.Tensor:
        return sum(torch.dot(ui.reshape(-1), wi.reshape(-1)) for ui, wi in zip(u, w))

    x = [torch.zeros_like(bi) for bi in b]
    residual = [bi.clone() for bi in b]
    direction = [bi.clone() for bi in b]
    norm = dot(residual, residual)
    for _ in range(steps):
        if norm <= tolerance:
            break
        image = apply(direction)
        alpha = norm / dot(direction, image)
        x = [xi + alpha * di for xi, di in zip(x, direction)]
        residual = [ri - alpha * ai for ri, ai in zip(residual, image)]
        new_norm = dot(residual, residual)
        direction = [ri + (new_norm / norm) * di for ri, di in zip(residual, direction)]
        norm = new_norm
    return x
