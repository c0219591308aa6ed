"""What the sequence learners (SNAIL, MANN) share: the order in which they read a support set."""
from __future__ import annotations

import torch

# seeds the order of the support examples at test time, so a checkpoint scores the same every time
EVAL_ORDER_SEED = 0


def support_reading_order(n_tasks: int, n_support: int, training: bool, device: torch.device) -> torch.Tensor:
    """One permutation of the support examples per task (tasks x support): random while
    meta-training, so that the network cannot read a label from a position; fixed at test."""
    generator = None if training else torch.Generator().manual_seed(EVAL_ORDER_SEED)
    return torch.stack([torch.randperm(n_support, generator=generator) for _ in range(n_tasks)]).to(device)
