"""Baseline and Baseline++ (Chen, Liu, Kira, Wang & Huang 2019, A Closer Look at Few-shot
Classification, Sec. 3): the transfer-learning control of every meta-learning comparison.

    training:   backbone f and a classifier C over all base classes minimise ordinary
                cross-entropy on labelled base-class images (no episodes, no inner loop)
    each test task:
                f is frozen; a new classifier C' for the task's N ways is trained on the
                support features (SGD, lr 0.01, momentum 0.9, weight decay 0.001, batches of 4,
                100 passes over the support set) and predicts the query set

Baseline's classifiers are linear; Baseline++'s are cosine: ``scale * cos(f(x), w_k)`` with one
weight vector w_k per class, which the paper finds reduces intra-class variation.

The trainer's meta-training episodes serve as the labelled batches: their episode labels are
mapped back to the data set's class ids (``TaskBatch.classes``), so ``algo.episode`` sets the
batch (ways x (shots + queries) images of ways different classes). Batch norm keeps running
statistics, used at test time: predictions never depend on other query images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, Metrics, PerImageFeatures
from metarun.tasks import Task, TaskBatch

# The new classifier's initialisation and mini-batch order while fine-tuning on a test task come
# from this seed, so a checkpoint scores the same every time.
FINE_TUNE_SEED = 0


def classification_step(learner: MetaLearner, classifier: nn.Module, batch: TaskBatch) -> Metrics:
    """Ordinary classification over the data set's classes: the meta-batch's images, labelled with
    their class ids, through ``learner.backbone`` and ``classifier``; the loss back-propagated."""
    x = torch.cat([batch.support_x.flatten(0, 1), batch.query_x.flatten(0, 1)])
    y = torch.cat([batch.classes.gather(1, batch.support_y).flatten(),
                   batch.classes.gather(1, batch.query_y).flatten()])
    logits = classifier(learner.backbone(x))
    learner.task_loss(logits, y).backward()
    return learner.task_metrics(logits.detach(), y)


class CosineClassifier(nn.Module):
    def __init__(self, in_features: int, n_classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Linear's initialisation
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class Baseline(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, n_base_classes: int, cfg):
        super().__init__("image")
        self.backbone = backbone
        self.cfg = cfg
        self.classifier = self.new_classifier(n_base_classes)

    def new_classifier(self, n_classes: int) -> nn.Module:
        if self.cfg.cosine:
            return CosineClassifier(self.backbone.out_features, n_classes, self.cfg.scale)
        return nn.Linear(self.backbone.out_features, n_classes)

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        return classification_step(self, self.classifier, batch)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).float()

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """A new classifier fine-tuned on the support features, applied to the query features."""
        support = support.detach()
        ft = self.cfg.fine_tune
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FINE_TUNE_SEED)
            classifier = self.new_classifier(int(task.support_y.max()) + 1).to(support.device)
        generator = torch.Generator().manual_seed(FINE_TUNE_SEED)
        optimizer = torch.optim.SGD(classifier.parameters(), lr=ft.lr, momentum=ft.momentum,
                                    dampening=ft.dampening, weight_decay=ft.weight_decay)
        with torch.enable_grad():
            for _ in range(ft.epochs):
                order = torch.randperm(len(support), generator=generator).to(support.device)
                for index in order.split(ft.batch_size):
                    loss = self.task_loss(classifier(support[index]), task.support_y[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        return classifier(query).detach()
