"""MAML++: its inner loop is MAML's with per-step rates and batch norms, its multi-step loss and
derivative-order schedules follow training, and it learns."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.mamlpp import MAMLPlusPlus, PerStepBatchNorm, at_step, multi_step_loss_weights
from metarun.backbones.conv4 import Conv4
from metarun.cli import run
from metarun.tasks import TaskBatch

SETTINGS = dict(first_order=False, inner_lr=0.4, inner_steps=3, eval_inner_steps=3, transductive_bn=True,
                task_batching="loop", head_init="learned", episode={"ways": 5},
                multi_step_loss_fraction=0.0, first_order_fraction=0.0)


def image_batch(tasks: int = 3) -> TaskBatch:
    generator = torch.Generator().manual_seed(1)
    return TaskBatch(torch.rand(tasks, 5, 1, 12, 12, generator=generator, dtype=torch.float64),
                     torch.arange(5).expand(tasks, -1),
                     torch.rand(tasks, 10, 1, 12, 12, generator=generator, dtype=torch.float64),
                     torch.arange(5).repeat(2).expand(tasks, -1))


def mamlpp(max_steps: int = 100, **changes) -> MAMLPlusPlus:
    torch.manual_seed(0)
    backbone = Conv4(1, 8, 3, 3, 12, channels_last=True, fold_first_batch_norm=True)
    return MAMLPlusPlus(backbone, 5, "image", OmegaConf.create({**SETTINGS, **changes}),
                        OmegaConf.create({"max_steps": max_steps})).double()


def gradients(learner) -> dict[str, torch.Tensor]:
    learner.zero_grad()
    learner.meta_train_step(image_batch())
    return {name: p.grad for name, p in learner.named_parameters() if p.grad is not None}


def test_multi_step_loss_weights_move_from_equal_to_the_last_step():
    assert multi_step_loss_weights(5, 0.0) == pytest.approx([0.2] * 5)
    middle = multi_step_loss_weights(5, 0.5)
    assert middle == pytest.approx([0.1] * 4 + [0.6]) and sum(middle) == pytest.approx(1)
    assert multi_step_loss_weights(5, 1.0) == pytest.approx([0.006] * 4 + [0.976])  # the floor, 0.03 / 5
    learner = mamlpp(max_steps=100, multi_step_loss_fraction=0.2)
    assert learner.step_weights() == pytest.approx([1 / 3] * 3)
    learner.updates.fill_(10)  # half-way through the multi-step phase (20 of 100 updates)
    assert learner.step_weights() == pytest.approx(multi_step_loss_weights(3, 0.5))
    learner.updates.fill_(20)
    assert learner.step_weights() == [0.0, 0.0, 1.0]


def test_untrained_mamlpp_without_its_schedules_is_maml_with_as_many_steps():
    """With every per-step rate at MAML's inner lr, every per-step batch norm at the same start
    and the last step's loss alone, MAML++'s meta-gradient is that of MAML whose inner loop holds
    the batch norms' affine parameters (Meta-SGD with frozen rates: the inner lr, 0 for batch
    norm): equal for the shared weights, and for a batch norm's parameters, summed over the
    steps. The per-step rates get a gradient of their own."""
    plus = mamlpp()
    torch.manual_seed(0)
    reference = MetaSGD(Conv4(1, 8, 3, 3, 12, channels_last=True, fold_first_batch_norm=True), 5, "image",
                        OmegaConf.create({**SETTINGS, "inner_lr_init": [0.4, 0.4]})).double()
    norms = {name.rpartition(".")[0] for name, _ in plus.named_parameters() if ".step_" in name}
    for name, alpha in zip(reference.names, reference.alphas):
        alpha.requires_grad_(False)
        alpha.fill_(0.0 if f"model.{name.rpartition('.')[0]}" in norms else 0.4)
    got, expected = gradients(plus), gradients(reference)
    assert len(norms) == 3
    for name, grad in expected.items():
        module, _, leaf = name.rpartition(".")
        if module in norms:
            torch.testing.assert_close(got[f"{module}.step_{leaf}"].sum(0), grad, msg=name)
            assert (got[f"{module}.step_{leaf}"].abs().sum(1) > 0).all(), name  # every step's row learns
        else:
            torch.testing.assert_close(got[name], grad, msg=name)
    for name, rate in zip(plus.adapted_names, plus.step_rates):
        if name.endswith("weight"):  # (a bias before a batch norm has no gradient: the norm cancels it)
            assert rate.grad.abs().min() > 0, name


def test_each_inner_step_normalises_with_its_own_affine_parameters():
    learner = mamlpp()
    norm = next(m for m in learner.modules() if isinstance(m, PerStepBatchNorm))
    with torch.no_grad():
        norm.step_bias[2] += 1.0
    x = image_batch().support_x[0]
    before = learner.model(x)
    with at_step(learner.model, 2):
        assert not torch.allclose(learner.model(x), before)
    torch.testing.assert_close(learner.model(x), before)  # back at step 0 after the context


def test_derivative_order_annealing_starts_first_order():
    """While first order, MAML++'s shared weights get first-order MAML's gradient."""
    early = gradients(mamlpp(first_order_fraction=0.5))
    first_order = gradients(mamlpp(first_order=True))
    second_order = gradients(mamlpp())
    name = "model.0.features.1.0.weight"
    torch.testing.assert_close(early[name], first_order[name])
    assert not torch.allclose(early[name], second_order[name])


def test_vmapped_meta_batch_gives_the_task_loops_gradient():
    looped = gradients(mamlpp(multi_step_loss_fraction=0.5))
    vmapped = gradients(mamlpp(multi_step_loss_fraction=0.5, task_batching="vmap"))
    assert looped.keys() == vmapped.keys()
    for name, expected in looped.items():
        torch.testing.assert_close(vmapped[name], expected, rtol=1e-9, atol=1e-12, msg=name)


def test_mamlpp_learns_real_omniglot(make_cfg, tmp_path):
    """5-way 1-shot accuracy on held-out Omniglot characters well above chance (20%)."""
    cfg = make_cfg("algo=mamlpp", "trainer.max_steps=200", "trainer.val_every=0", "eval.episodes=100",
                   "backbone.channels=32", "algo.meta_batch=2", "algo.inner_steps=2")
    results = run(cfg, tmp_path)
    assert results["algo"] == "mamlpp" and (results["ways"], results["shots"]) == (5, 1)
    assert results["mean"] - results["ci95"] >= 0.5, results
