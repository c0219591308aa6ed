"""Backbone shapes and sizes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def test_drop_block_drops_whole_squares_at_the_annealed_rate():
    from metarun.backbones.resnet12 import DropBlock
    torch.manual_seed(0)
    drop = DropBlock(drop_rate=0.2, block_size=3, anneal_steps=4)
    x = torch.ones(64, 8, 12, 12)
    drop.eval()
    assert torch.equal(drop(x), x)  # evaluation: untouched
    drop.train()
    early = (drop(x) == 0).float().mean()  # step 1 of 4: a quarter of the rate
    for _ in range(3):
        out = drop(x)
    late = (out == 0).float().mean()
    assert int(drop.steps) == 4 and "steps" in drop.state_dict()  # checkpointed
    assert 0.03 < early < 0.08 and 0.15 < late < 0.25, (early, late)
    assert abs(float(out.mean()) - 1.0) < 0.05  # rescaled: the expected activation is kept
    # every dropped pixel lies in a 3x3 square of dropped pixels
    zeros = (out == 0).float()
    square_corners = (F.avg_pool2d(zeros, 3, stride=1) == 1).float()
    in_a_square = F.max_pool2d(F.pad(square_corners, (2, 2, 2, 2)), 3, stride=1)
    assert zeros.sum() > 0 and torch.equal(in_a_square * zeros, zeros)


def test_resnet12_with_drop_block_trains(make_cfg):
    cfg = make_cfg("backbone=resnet12", "algo=protonet", "backbone.drop_block.rate=0.1")
    learner = build_learner(cfg, "image", (3, 32, 32), None).train()
    drops = [m for m in learner.modules() if type(m).__name__ == "DropBlock"]
    assert len(drops) == 2  # after the last two residual blocks
    x = torch.rand(6, 3, 32, 32)
    learner.task_loss(learner.backbone(x)[:, :3], torch.arange(3).repeat(2)).backward()
    assert int(drops[0].steps) == 1
