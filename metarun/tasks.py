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
    """A meta-batch of tasks of one shape, stacked along a leading task dimension.

    ``classes[t, k]`` is the data set's own id of way k of task t (image sources): what the
    transfer baselines classify into while they pre-train."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def __getitem__(self, i: int) -> Task:
        return Task(self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def select(self, tasks: slice) -> "TaskBatch":
        return TaskBatch(*(None if t is None else t[tasks] for t in self.tensors()))

    def to(self, device) -> "TaskBatch":
        return TaskBatch(*(None if t is None else t.to(device, non_blocking=True) for t in self.tensors()))

    def tensors(self):
        return self.support_x, self.support_y, self.query_x, self.query_y, self.classes
