"""Backbone shapes and sizes."""
from __future__ import annotations

import torch

from metarun.algorithms import build_learner
from metarun.tasks import Task


def test_resnet12_is_the_64_160_320_640_network(make_cfg):
    cfg = make_cfg("backbone=resnet12", "algo=protonet")
    learner = build_learner(cfg, "image", (3, 84, 84), None)
    backbone = learner.backbone
    # 12.4M parameters, the size usually quoted for this ResNet-12
    assert sum(p.numel() for p in backbone.parameters()) == 12_424_320
    assert backbone.out_shape == (640, 5, 5) and backbone.out_features == 640
    flat = build_learner(make_cfg("backbone=resnet12", "backbone.global_pool=false"), "image", (3, 84, 84), None)
    assert flat.model[0].out_features == 16_000  # MAML's head sees the flattened map

    x = torch.rand(6, 3, 32, 32)  # a small input keeps the test fast; 32 -> 2x2 maps
    small = build_learner(cfg, "image", (3, 32, 32), None)
    task = Task(x[:3], torch.arange(3), x[3:], torch.arange(3))
    loss = small.task_loss(small.adapt_and_predict(task), task.query_y)
    loss.backward()
    assert all(p.grad is not None for p in small.parameters())
