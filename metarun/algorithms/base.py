"""The one interface every meta-learner implements; the trainer knows nothing else about it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metarun.tasks import Task, TaskBatch

Metrics = dict[str, torch.Tensor]  # a training step's metrics by name (0-d tensors)


class MetaLearner(nn.Module):
    """A meta-learner owns its meta-parameters (``self.parameters()``).

    ``meta_train_step`` computes the meta-gradient of one outer update into the parameters'
    ``.grad`` and returns metrics (0-d tensors, which the trainer reads after the update, so a
    step reads nothing back from the GPU and can be recorded as a CUDA graph); the trainer
    zeroes the gradients before and applies the optimiser after, so checkpointing, schedules and
    logging are the same for every algorithm.

    A learner whose outer update is more than a gradient for an optimiser (TRPO's step needs a
    line search on the loss) sets ``owns_outer_update`` and implements ``meta_update``, which
    applies the update itself; the trainer then neither zeroes gradients nor steps its optimiser,
    and everything else (checkpoints of the parameters, resume, logging) stays the same.
    """

    owns_outer_update = False

    # see outer_loss; learners that offer it set it from algo.label_smoothing
    label_smoothing = 0.0

    # why bf16 autocast would break this learner's meta-training, or None (trainer.precision=auto
    # then keeps it in fp32)
    bf16_breaks: str | None = None

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "image" (classification) or "regression"
        # whether a query prediction depends on the other query examples (batch-norm statistics)
        self.transductive = False

    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            return F.mse_loss(prediction, target)
        return F.cross_entropy(prediction, target)

    def outer_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The query loss that meta-training back-propagates: ``task_loss``, with a share
        ``label_smoothing`` of each target's probability spread evenly over the other classes
        (MetaOptNet's ``eps``: 1 - eps on the target, eps / (K - 1) on each other class)."""
        if self.kind == "regression" or not self.label_smoothing:
            return self.task_loss(prediction, target)
        classes = prediction.shape[-1]  # torch's smoothing also gives the target a share of the spread
        return F.cross_entropy(prediction, target, label_smoothing=self.label_smoothing * classes / (classes - 1))

    def task_metrics(self, prediction: torch.Tensor, target: torch.Tensor) -> Metrics:
        metrics = {"loss": self.task_loss(prediction, target).detach()}
        if self.kind != "regression":
            metrics["acc"] = (prediction.argmax(-1) == target).float().mean()
        return metrics

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        """One outer update's gradient. This default serves learners whose query predictions are
        differentiable end to end with no inner loop (the metric learners): the mean query loss
        of the batch's tasks, back-propagated task by task to hold one task's graph at a time."""
        per_task = []
        for task in batch:
            prediction, target = self.training_predictions(task)
            (self.outer_loss(prediction, target) / len(batch)).backward()
            per_task.append(self.task_metrics(prediction.detach(), target))
        return mean_metrics(per_task)

    def meta_update(self, batch: TaskBatch, outer: "OuterStep") -> Metrics:
        """One outer update applied to the parameters (learners with ``owns_outer_update``)."""
        raise NotImplementedError

    def training_predictions(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictions that meta-training scores, with their targets: by default the query
        predictions after adapting on the support set, as at test time."""
        return self.adapt_and_predict(task), task.query_y

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        """Query predictions (logits or regression values) after adapting on the support set."""
        raise NotImplementedError

    def predict_many(self, tasks: list[Task]) -> list[torch.Tensor]:
        """``adapt_and_predict`` of each task: at test time, learners that can share work
        between tasks (``PerImageFeatures``) do so."""
        return [self.adapt_and_predict(task) for task in tasks]

    def logged_scalars(self) -> dict[str, float]:
        """Values of the learner itself to log beside the training metrics (TensorBoard)."""
        return {}

    def on_checkpoint(self, directory: Path, step: int) -> None:
        """Called after the trainer wrote ``directory``/last.pt at ``step``: what a learner keeps
        beside its checkpoints (MetaNAS: the genotype and its picture)."""

    def class_probabilities(self, prediction: torch.Tensor) -> torch.Tensor:
        """``adapt_and_predict``'s classification output as probabilities over the ways (rows sum
        to 1): the softmax of logits (log-probabilities stay what they are)."""
        return torch.softmax(prediction.float(), dim=-1)


@dataclass
class OuterStep:
    """What the trainer tells a learner that applies its own outer update: ``scale``, the
    schedule's factor of the step size at this update (``algo.scheduler``; 1 when constant),
    and ``average``, the mean of a tensor over the processes of a torchrun job (the tensor itself
    in one process), so that every process takes the same step from its share of the meta-batch."""

    scale: float
    average: Callable[[torch.Tensor], torch.Tensor]


class PerImageFeatures:
    """For metric learners (mixed in before ``MetaLearner``) whose query predictions come from each
    image's own features, ``features(x)``, and the episode's labels, ``predict_from_features``.

    At test time batch norm uses running statistics, so an image's features do not depend on the
    images beside it: ``predict_many`` then embeds the images of many test episodes in one
    backbone pass (bigger batches, one call instead of one per episode). While training, batch
    statistics make the episode the unit, and tasks go one by one."""

    # algo.rotate_support (metarun's, off by default), for the learners whose config has the key:
    # each meta-training episode is scored once per choice of support set. The episode's S + Q
    # images of a class (its support images first, in the order the episode lists them) are
    # taken in cyclic windows of S, each window the support set of one view and the rest its
    # queries; the loss is the mean over the views (the first view is the episode as drawn). The
    # embeddings are computed once, so in a 1-shot episode with 2 queries every image is a support
    # image once and a query twice for the cost of one forward and backward pass.
    rotate_support = False

    def training_predictions(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.rotate_support:
            return super().training_predictions(task)
        labels = torch.cat([task.support_y, task.query_y])
        ways = int(labels.max()) + 1
        shots = task.support_x.shape[0] // ways
        features = self.features(torch.cat([task.support_x, task.query_x]))
        by_class = features[torch.sort(labels, stable=True).indices].unflatten(0, (ways, -1))
        per_class = by_class.shape[1]
        way_labels = torch.arange(ways, device=labels.device)
        logits, targets = [], []
        for view in range(-(-per_class // shots)):
            window = [(view * shots + i) % per_class for i in range(shots)]
            rest = [i for i in range(per_class) if i not in window]
            support, query = by_class[:, window].flatten(0, 1), by_class[:, rest].flatten(0, 1)
            # a view's task, class-major: its features stand for the images (the heads read its labels)
            view_task = Task(support, way_labels.repeat_interleave(shots),
                             query, way_labels.repeat_interleave(len(rest)))
            logits.append(self.predict_from_features(view_task, support, query))
            targets.append(view_task.query_y)
        return torch.cat(logits), torch.cat(targets)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def episode_features(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(torch.cat([task.support_x, task.query_x]))
        return features[:len(task.support_x)], features[len(task.support_x):]

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        return self.predict_from_features(task, *self.episode_features(task))

    def predict_many(self, tasks: list[Task]) -> list[torch.Tensor]:
        if self.training or len(tasks) == 1:
            return super().predict_many(tasks)
        sizes = [n for task in tasks for n in (len(task.support_x), len(task.query_x))]
        images = torch.cat([x for task in tasks for x in (task.support_x, task.query_x)])
        features = self.features(images).split(sizes)
        return [self.predict_from_features(task, features[2 * i], features[2 * i + 1])
                for i, task in enumerate(tasks)]


def mean_metrics(per_task: list[Metrics]) -> Metrics:
    return {k: sum(m[k] for m in per_task) / len(per_task) for k in per_task[0]}
