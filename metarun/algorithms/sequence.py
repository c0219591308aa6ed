"""What the sequence learners (SNAIL, MANN) share: how a meta-batch's images are embedded, the
order in which each support set is read, and tasks cut to fewer ways for a curriculum."""
from __future__ import annotations

from typing import Callable

import torch

from metarun.tasks import TaskBatch

# seeds the order of the support examples at test time, so a checkpoint scores the same every time
EVAL_ORDER_SEED = 0


def embed_tasks(embed: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
                query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a batch of tasks embedded in one pass, so that while meta-training batch
    norm normalises with the statistics of many classes, close to the running averages it uses at
    test (task by task, both learners came to rely on per-task statistics; see their files).
    Returns support (tasks x support x features) and query (tasks x queries x features)."""
    n_tasks, n_support = support_x.shape[:2]
    features = embed(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
    return (features[:n_tasks * n_support].unflatten(0, (n_tasks, n_support)),
            features[n_tasks * n_support:].unflatten(0, (n_tasks, -1)))


def in_reading_order(support: torch.Tensor, support_y: torch.Tensor, training: bool):
    """Each task's support features and labels, permuted: randomly while meta-training, so that
    the network cannot read a label from a position; in a fixed order at test."""
    generator = None if training else torch.Generator().manual_seed(EVAL_ORDER_SEED)
    order = torch.stack([torch.randperm(support.shape[1], generator=generator)
                         for _ in range(support.shape[0])]).to(support.device)
    return support.gather(1, order.unsqueeze(-1).expand(-1, -1, support.shape[-1])), support_y.gather(1, order)


def keep_ways(batch: TaskBatch, ways: int, all_ways: int) -> TaskBatch:
    """The meta-batch with ``ways`` of each task's ``all_ways`` classes, drawn at random, and their
    examples (images or features) only. The labels keep their ids, so a network with one output
    per way learns every output while it is shown fewer classes at a time (a curriculum)."""
    n_tasks = len(batch)
    if ways >= all_ways:
        return batch
    kept = torch.stack([torch.randperm(all_ways)[:ways] for _ in range(n_tasks)]).to(batch.support_y.device)

    def select(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (y.unsqueeze(-1) == kept.unsqueeze(1)).any(-1)
        return x[mask].unflatten(0, (n_tasks, -1)), y[mask].unflatten(0, (n_tasks, -1))

    support_x, support_y = select(batch.support_x, batch.support_y)
    query_x, query_y = select(batch.query_x, batch.query_y)
    return TaskBatch(support_x, support_y, query_x, query_y)


def curriculum_ways(start: int | None, ways: int, updates: int, fraction: float, max_steps: int) -> int:
    """The classes of a task at update ``updates`` of a curriculum that starts at ``start`` (None:
    no curriculum) and adds classes linearly up to ``ways`` over ``fraction`` of ``max_steps``."""
    if start is None:
        return ways
    progress = updates / max(1.0, fraction * max_steps)
    return min(ways, round(start + (ways - start) * progress))
