"""The unit of work of every meta-learner: a task with a support and a query set."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Task:
    """One few-shot task. Classification labels are 0..ways-1; regression targets are floats."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def to(self, device) -> "Task":
        return Task(*(t.to(device, non_blocking=True) for t in self.tensors()))

    def tensors(self):
        return self.support_x, self.support_y, self.query_x, self.query_y


@dataclass
class TaskBatch:
    """A meta-batch of tasks of one shape, stacked along a leading task dimension."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def __getitem__(self, i: int) -> Task:
        return Task(self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device) -> "TaskBatch":
        return TaskBatch(*(t.to(device, non_blocking=True) for t in
                           (self.support_x, self.support_y, self.query_x, self.query_y)))
