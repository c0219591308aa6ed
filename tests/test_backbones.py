"""Backbone shapes and sizes."""
from __future__ import annotations

import pytest
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


def test_wrn28_10_is_the_36_5m_parameter_network(make_cfg):
    from torch import nn

    from metarun.backbones.wrn import WideBlock
    backbone = build_learner(make_cfg("backbone=wrn28", "algo=protonet"), "image", (3, 84, 84), None).backbone
    # Zagoruyko & Komodakis 2016's WRN-28-10: 36.5M parameters, 36,479,194 with the 640 x 10
    # classifier of CIFAR-10 that a feature extractor leaves out
    assert sum(p.numel() for p in backbone.parameters()) == 36_479_194 - (640 * 10 + 10)
    assert backbone.out_shape == (640, 21, 21) and backbone.out_features == 640
    blocks = [m for m in backbone.modules() if isinstance(m, WideBlock)]
    assert len(blocks) == 12  # (28 - 4) / 6 = 4 a group
    assert [isinstance(b.shortcut, nn.Identity) for b in blocks[::4]] == [False, False, False]

    cfg = make_cfg("backbone=wrn28", "algo=protonet", "backbone.depth=10", "backbone.widen=2",
                   "backbone.dropout=0.3")
    small = build_learner(cfg, "image", (3, 32, 32), None)
    x = torch.rand(6, 3, 32, 32)
    task = Task(x[:3], torch.arange(3), x[3:], torch.arange(3))
    small.train()
    torch.manual_seed(0)
    assert not torch.equal(small.backbone(x), small.backbone(x))  # dropout in training
    small.task_loss(small.backbone(x)[:, :3], torch.arange(3).repeat(2)).backward()
    assert all(p.grad is not None for p in small.parameters())
    small.eval()
    assert torch.equal(small.adapt_and_predict(task), small.adapt_and_predict(task))


def test_wrn_depth_must_be_6n_plus_4(make_cfg):
    import pytest

    from metarun.config_check import validate_config
    from metarun.errors import ConfigError
    with pytest.raises(ConfigError, match="6n \\+ 4") as error:
        validate_config(make_cfg("backbone=wrn28", "backbone.depth=12"))
    assert error.value.key == "backbone.depth"


def test_conv4_lays_every_block_out_channels_last_from_a_one_channel_image(make_cfg):
    """A one-channel input has no distinct channels-last layout, so a plain convolution would
    hand the first block's maps to batch norm and max-pool as NCHW (their slow CPU kernels)."""
    from metarun.backbones.conv4 import ChannelsLastConv2d
    backbone = build_learner(make_cfg("algo=protonet"), "image", (1, 28, 28), None).backbone
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(isinstance(m, ChannelsLastConv2d) for m in convs)
    maps = []  # each block's output (the first block's convolution is folded, not called as a module)
    hooks = [m.register_forward_hook(lambda m, i, out: maps.append(out)) for m in backbone.features]
    x = torch.rand(10, 1, 28, 28)
    features = backbone(x)
    for hook in hooks:
        hook.remove()
    assert all(m.is_contiguous(memory_format=torch.channels_last) and not m.is_contiguous() for m in maps[:3])
    plain = torch.nn.Conv2d(1, 64, 3, padding=1)
    plain.load_state_dict(convs[0].state_dict())  # the same parameters, the same function
    torch.testing.assert_close(convs[0](x), plain(x))
    assert features.shape == (10, 64)


@pytest.mark.parametrize("downsample", ["max_pool", "stride"])
def test_conv4_first_block_folds_batch_norm_into_its_convolution(downsample):
    """The folded first block is batch norm in training mode: same output, same gradients of
    every parameter, same running averages; and the batch-norm layer itself is not run. With
    max-pools and with stride-2 convolutions (whose patches are every other one)."""
    from metarun.backbones.conv4 import Conv4
    torch.manual_seed(0)
    folded = Conv4(1, 8, 4, 4, 28, channels_last=True, fold_first_batch_norm=True, downsample=downsample).double()
    plain = Conv4(1, 8, 4, 4, 28, channels_last=True, fold_first_batch_norm=False, downsample=downsample).double()
    with torch.no_grad():
        for p in folded.parameters():
            p.uniform_(-1, 1)
    plain.load_state_dict(folded.state_dict())
    calls = []
    folded.features[0][1].register_forward_hook(lambda *args: calls.append(1))
    for step in range(2):
        x = torch.rand(20, 1, 28, 28, dtype=torch.float64) + step  # a shifted mean the second time
        outputs = [model(x) for model in (folded, plain)]
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
        grads = [torch.autograd.grad(out.pow(2).sum(), list(model.parameters())) for out, model in
                 zip(outputs, (folded, plain))]
        for name, a, b in zip([n for n, _ in folded.named_parameters()], *grads):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)
    assert not calls
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(dict(folded.named_buffers())[name], buffer, rtol=1e-10, atol=0, msg=name)
    folded.eval(), plain.eval()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(folded(x), plain(x))  # running averages: the layers one after another
    assert calls


def test_strided_conv4_is_mamls_omniglot_network():
    """backbone.downsample=stride, backbone.readout=mean: four [3x3 stride-2 conv, batch norm,
    ReLU] blocks, 28 -> 14 -> 7 -> 4 -> 2, no pooling, the features the mean of the last 2x2 maps
    (Finn et al.'s Omniglot code); the same function as those layers written out with torch.nn."""
    from metarun.backbones.conv4 import Conv4
    torch.manual_seed(0)
    strided = Conv4(1, 8, 4, 4, 28, channels_last=True, fold_first_batch_norm=True, downsample="stride",
                    readout="mean").double()
    assert strided.out_shape == (8, 2, 2) and strided.out_features == 8
    layers, c = [], 1
    for _ in range(4):
        layers += [torch.nn.Conv2d(c, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()]
        c = 8
    reference = torch.nn.Sequential(*layers).double()
    reference.load_state_dict({f"{3 * block + index}.{name}": value for key, value in strided.state_dict().items()
                               for block, index, name in [(int(key.split(".")[1]), int(key.split(".")[2]),
                                                           key.split(".", 3)[3])]})
    x = torch.rand(10, 1, 28, 28, dtype=torch.float64)
    maps = reference(x)
    assert maps.shape == (10, 8, 2, 2)
    torch.testing.assert_close(strided(x), maps.mean((2, 3)))
    flat = Conv4(1, 8, 4, 4, 28, channels_last=False, fold_first_batch_norm=False, downsample="stride")
    assert flat(torch.rand(3, 1, 28, 28)).shape == (3, 32) == (3, flat.out_features)


def test_max_readout_is_feats_convnet():
    """backbone.readout=max: each channel's largest value over the last maps (FEAT's ConvNet,
    84x84 -> 5x5 maps -> 64 features)."""
    from metarun.backbones.conv4 import Conv4
    torch.manual_seed(0)
    network = Conv4(3, 8, 4, 4, 84, channels_last=True, fold_first_batch_norm=True, readout="max").eval()
    x = torch.rand(4, 3, 84, 84)
    maps = network.feature_map(x)
    assert maps.shape == (4, 8, 5, 5) and network.out_features == 8
    torch.testing.assert_close(network(x), maps.flatten(2).max(-1).values)
