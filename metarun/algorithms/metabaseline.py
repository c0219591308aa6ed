"""Meta-Baseline (Chen, Liu, Xu, Darrell & Wang, ICCV 2021, "Meta-Baseline: Exploring Simple
Meta-Learning for Few-Shot Learning", Sec. 3): whole-classification pre-training, then
meta-training of the same network with the classifier it is tested with.

    stage 1 (Classifier-Baseline), the first ``algo.pretrain_fraction`` of the updates:
        a linear classifier over all base classes on f; cross-entropy on the episodes' images
        labelled with their class ids (as Baseline trains)
    stage 2 (Meta-Baseline), the updates after, and every test:
        c_k = mean of f(x) over the support examples of class k                 (centroids)
        logits(q) = tau * cos(f(q), c_k),  tau meta-learned                     (from 10)
        loss = cross-entropy of the query examples; the stage-1 classifier is left behind

The paper's finding: stage 1 alone, tested with the cosine centroid classifier, is a strong
few-shot learner already, and stage 2 improves it by training what the test uses. metarun runs
both stages in one run, with one optimiser and one episode shape (the paper: SGD with a rate per
stage, batches of 128 images in stage 1, episodes of the test's shape in stage 2). The stage is
decided at every update from the update count (a buffer: a resumed run continues in its stage)
and ``trainer.max_steps`` as it stands then (``trainer.fit_max_steps`` sets it once the run has
begun, so the split follows what the machine fits). Batch norm as in ProtoNet.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, Metrics, PerImageFeatures
from metarun.algorithms.baseline import classification_step
from metarun.algorithms.protonet import class_means
from metarun.tasks import Task, TaskBatch


def cosine_centroid_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """cos(query, c_k) for the class centroids c_k of the support features, in fp32."""
    with torch.autocast(support.device.type, enabled=False):
        centroids = class_means(support.float(), support_y)
        return F.normalize(query.float(), dim=1) @ F.normalize(centroids, dim=1).T


class MetaBaseline(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, n_base_classes: int, cfg, trainer_cfg):
        super().__init__("image")
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.out_features, n_base_classes)  # stage 1 only
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature_init)))
        self.pretrain_fraction, self.trainer_cfg = float(cfg.pretrain_fraction), trainer_cfg
        self.rotate_support = cfg.rotate_support  # stage 2's episodes
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # checkpointed with the model

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        pretraining = int(self.updates) < round(self.pretrain_fraction * self.trainer_cfg.max_steps)
        self.updates += 1
        if pretraining:
            return classification_step(self, self.classifier, batch)
        return super().meta_train_step(batch)  # stage 2: the query loss of each episode

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.log_temperature.exp() * cosine_centroid_logits(support, task.support_y, query)
