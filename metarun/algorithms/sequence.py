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



class WaysCurriculum:
    """Metarun's curriculum of ways for the sequence learners (mixed in before ``MetaLearner``;
    ``algo.curriculum_ways`` null: none). Meta-training begins on tasks cut to ``curriculum_ways``
    of their classes and adds classes linearly up to the learner's ``ways`` over the first
    ``algo.curriculum_fraction`` of ``trainer.max_steps``. The update count is a buffer saved with
    the checkpoint; a checkpoint written before the curriculum existed has none and loads at 0."""

    def init_curriculum(self, cfg, trainer_cfg) -> None:
        self.curriculum_ways, self.curriculum_fraction = cfg.curriculum_ways, float(cfg.curriculum_fraction)
        self.trainer_cfg = trainer_cfg
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def ways_now(self) -> int:
        """The classes of a task at this update."""
        if self.curriculum_ways is None:
            return self.ways
        progress = int(self.updates) / max(1.0, self.curriculum_fraction * self.trainer_cfg.max_steps)
        return min(self.ways, round(self.curriculum_ways + (self.ways - self.curriculum_ways) * progress))

    def curriculum_step(self, tasks: TaskBatch) -> TaskBatch:
        """This update's tasks, cut to the curriculum's ways; counts the update."""
        cut = keep_ways(tasks, self.ways_now(), self.ways)
        self.updates += 1
        return cut

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "updates", torch.zeros((), dtype=torch.long))  # (a copy of the caller's)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
