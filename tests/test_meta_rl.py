"""Meta-RL: the task families, the reference policies, the estimators, and that RL² and MAML
learn on them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metarun.cli import run
from metarun.config_check import validate_config
from metarun.data.bandits import BanditSource
from metarun.data.navigation2d import NavigationSource
from metarun.engine.checkpoint import load_checkpoint
from metarun.errors import ConfigError
from metarun.rl.advantages import discounted_returns, gae, linear_feature_baseline
from metarun.rl.references import bandit_returns, navigation_returns
from metarun.rl.trpo import TrustRegion, trust_region_step

RL2 = ("algo=rl2", "data=bandits", "backbone=gru")
MAML_NAV = ("algo=maml", "data=navigation2d", "backbone=mlp")


def bandit_tasks(n: int, arms: int = 5, horizon: int = 10, seed: int = 0):
    return BanditSource(arms, horizon).sample(torch.Generator().manual_seed(seed), n)


def test_bandit_rewards_depend_only_on_the_task_and_the_arm():
    tasks = bandit_tasks(3000)
    arms = torch.zeros(3000, dtype=torch.long)
    first, again = tasks.pull(0, arms), tasks.pull(0, arms)
    assert torch.equal(first, again)  # the luck is part of the task: paired comparisons
    # a pull pays 1 with the arm's probability
    assert abs(float((first - tasks.probs[:, 0]).mean())) < 0.03
    assert torch.allclose(tasks.optimal_return(), 10 * tasks.probs.max(1).values)


def test_fixed_test_tasks_are_the_same_for_every_call():
    source = BanditSource(5, 10)
    a = [t.probs for t in source.fixed_episodes(5, 0, "test")]
    b = [t.probs for t in source.fixed_episodes(5, 0, "test")]
    c = [t.probs for t in source.fixed_episodes(5, 0, "val")]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_bandit_reference_policies_meet_what_is_known_of_them():
    """Random earns half the pulls on average; the learning policies beat it; Thompson sampling
    earns about what Duan et al. 2016 (Table 1) report for it: 5.7 in 10 pulls, 74.7 in 100
    (20,000 / 5,000 tasks give 5.82 ± 0.03 and 75.3 ± 0.4 here)."""
    short, long = bandit_tasks(4000), bandit_tasks(2000, horizon=100, seed=1)
    random = bandit_returns(short, "random", seed=0)
    assert abs(random.mean() - 5.0) < 2 * 1.96 * random.std() / np.sqrt(len(random))
    for policy in ("epsilon_greedy", "ucb1", "thompson"):
        assert bandit_returns(short, policy, seed=0).mean() > random.mean() + 0.5, policy
    assert abs(bandit_returns(short, "thompson", seed=0).mean() - 5.7) < 0.25
    assert abs(bandit_returns(long, "thompson", seed=0).mean() - 74.7) < 2.0


def test_navigation_steps_are_clipped_and_the_oracle_reaches_the_goal():
    source = NavigationSource((-0.5, 0.5), 100, 0.1, "distance", 0.01)
    tasks = source.sample(torch.Generator().manual_seed(0), 4)
    positions = tasks.start(1)
    moved, rewards, reached = tasks.step(positions, torch.full_like(positions, 5.0))
    assert torch.allclose(moved, torch.full_like(moved, 0.1))
    assert torch.allclose(rewards, -(moved - tasks.goals.unsqueeze(1)).norm(dim=-1))
    assert not reached.any()
    oracle = navigation_returns(tasks, "oracle", 1, seed=0)
    random = navigation_returns(tasks, "random", 20, seed=0)
    # the oracle needs at most 5 steps of 0.1 per coordinate and stops at the goal
    assert (oracle > -2.5).all() and (oracle < 0).all()
    assert (random < oracle - 5).all()


def test_gae_reduces_to_returns_minus_values_and_to_td_errors():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    assert torch.allclose(gae(rewards, values, 0.9, 1.0), discounted_returns(rewards, 0.9) - values, atol=1e-6)
    next_values = torch.cat([values[:, 1:], torch.zeros(3, 1)], dim=1)
    assert torch.allclose(gae(rewards, values, 0.9, 0.0), rewards + 0.9 * next_values - values, atol=1e-6)


def test_linear_feature_baseline_fits_returns_linear_in_its_features():
    torch.manual_seed(0)
    observations = torch.randn(8, 20, 2, dtype=torch.float64)
    time = (torch.arange(20, dtype=torch.float64) / 100).expand(8, 20)
    returns = 2 * observations[..., 0] - observations[..., 1] ** 2 + 3 * time ** 2 + 0.5
    mask = torch.ones(8, 20, dtype=torch.bool)
    fitted = linear_feature_baseline(observations, returns, mask, ridge=1e-10)
    assert torch.allclose(fitted, returns, atol=1e-5)


def test_trust_region_step_is_the_natural_gradient_step_to_the_kl_bound():
    """For a Gaussian policy N(mu, diag(sigma^2)) over one state, KL(old || new) =
    sum (mu - mu_old)^2 / (2 sigma^2): the Fisher matrix is diag(1 / sigma^2), and on a linear
    loss g . mu TRPO's step is -sqrt(2 max_kl / g' F^-1 g) F^-1 g, which lands on the bound."""
    sigma2 = torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    mu = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    old = mu.detach().clone()

    def loss_and_kl(differentiable):
        return g @ mu, ((mu - old) ** 2 / (2 * sigma2)).sum()

    region = TrustRegion(max_kl=0.02, cg_iterations=10, damping=0.0)
    diagnostics = trust_region_step([mu], loss_and_kl, region)
    natural = sigma2 * g
    expected = -torch.sqrt(2 * 0.02 / (g @ natural)) * natural
    assert diagnostics["accepted"] == 1.0 and diagnostics["step_fraction"] == 1.0
    assert torch.allclose(mu.detach(), expected, atol=1e-10)
    assert abs(diagnostics["kl"] - 0.02) < 1e-9
    assert abs(diagnostics["loss_improvement"] - diagnostics["expected_improvement"]) < 1e-9


def test_trust_region_step_backtracks_and_declines_a_step_that_does_not_help():
    """A loss that worsens along every step of the line search: no step is taken."""
    mu = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    old = mu.detach().clone()
    gradient_sign = torch.tensor([1.0, 1.0], dtype=torch.float64)

    def loss_and_kl(differentiable):
        # its gradient at 0 points one way, but any move along it raises the loss (a kink at 0)
        return gradient_sign @ mu + 10 * (mu - old).abs().sum(), ((mu - old) ** 2).sum() / 2

    diagnostics = trust_region_step([mu], loss_and_kl, TrustRegion(max_kl=0.01, max_backtracks=5))
    assert diagnostics["accepted"] == 0.0
    assert torch.equal(mu.detach(), old)


def test_rl2_learns_to_explore_and_exploit_bandits(make_cfg, tmp_path):
    """After a short run, RL² on 5-armed 10-pull bandits beats random by far and comes close
    to Thompson sampling on the same test tasks (paired; the paper's figures are 6.7 for RL²,
    5.0 for random). A 64-unit GRU at Adam 3e-3 keeps it short: 1,000 updates of 256 trials,
    about 10 s (5.75 here, Thompson sampling 5.74)."""
    cfg = make_cfg(*RL2, "backbone.hidden=64", "algo.optimizer.lr=0.003", "trainer.max_steps=1000",
                   "trainer.val_every=0", "eval.episodes=1000")
    results = run(cfg, tmp_path)
    references = results["references"]
    assert results["metric"] == "return" and results["n_episodes"] == 1000
    assert references["random"]["learner_minus_reference"]["mean"] > 0.6, results
    assert references["thompson"]["learner_minus_reference"]["mean"] > -0.25, results
    assert results["regret"]["mean"] < 2.9, results
    assert results["published"]["RL2"] == 6.7
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["test/return"] == results["mean"] and "test/regret" in logged[-1]
    assert any("train/return" in record for record in logged)


def test_rl2_with_trpo_learns_bandits_within_the_trust_region(make_cfg, tmp_path):
    """RL² with the paper's slow learner (algo.outer_step=trpo): after 60 TRPO steps on 128
    trials each (a 64-unit GRU; about 10 s), it beats random on the same 500 test tasks by far
    (+1.42 / +1.32 / +1.46 on seeds 0-2); its steps stay within max_kl and nearly all are
    accepted, and the value head, refitted after each step, predicts the returns of the next
    batch's trials (which it has not seen) far better than its initial weights."""
    cfg = make_cfg(*RL2, "backbone.hidden=64", "algo.outer_step=trpo", "algo.meta_batch=128",
                   "trainer.max_steps=60", "trainer.val_every=0", "trainer.log_every=1", "eval.episodes=500")
    results = run(cfg, tmp_path)
    assert results["references"]["random"]["learner_minus_reference"]["mean"] > 0.9, results
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in logged if "train/kl" in record]
    assert len(steps) == 60
    assert all(record["train/kl"] <= cfg.algo.trpo.max_kl for record in steps)
    assert sum(record["train/accepted"] for record in steps) >= 54
    # logged before each refit: the error of the head fitted on the batch before, on this batch's trials
    assert steps[-1]["train/value_loss"] < steps[0]["train/value_loss"] / 2, (steps[0], steps[-1])


def test_maml_trpo_adaptation_beats_the_pre_update_policy(make_cfg, tmp_path):
    """After a short MAML-TRPO run (20 meta-iterations of 10 tasks x 10 trajectories), the
    navigation policy after 3 policy-gradient steps on a held-out goal earns far more than
    before them (paired per task); the oracle stays ahead, random behind."""
    cfg = make_cfg(*MAML_NAV, "algo.meta_batch=10", "algo.trajectories=10", "trainer.max_steps=20",
                   "trainer.val_every=0", "eval.episodes=20")
    results = run(cfg, tmp_path)
    scores = np.load(tmp_path / "episode_scores.npy")  # [tasks, 0..3 steps]
    assert scores.shape == (20, 4)
    gain = scores[:, 3] - scores[:, 0]
    assert gain.mean() - 1.96 * gain.std(ddof=1) / np.sqrt(len(gain)) > 5, gain
    assert results["references"]["oracle"]["mean"] > results["mean"]
    assert results["mean"] > results["references"]["random"]["mean"]
    assert len(results["return_after_steps"]) == 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["published"]["oracle"] == -2.3


def test_the_test_samples_its_own_number_of_trajectories(make_cfg, monkeypatch):
    """algo.eval_trajectories: each test step of MAML-TRPO samples that many trajectories (the
    authors' point test: 40), training keeps algo.trajectories; null tests as it trains."""
    from metarun.algorithms import build_learner
    from metarun.data.navigation2d import NavigationTasks
    sampled = []
    simulate = NavigationTasks.simulate
    monkeypatch.setattr(NavigationTasks, "simulate", lambda tasks, n: sampled.append(n) or simulate(tasks, n))
    source = NavigationSource((-0.5, 0.5), 10, 0.1, "distance", 0.01)
    tasks = source.sample(torch.Generator().manual_seed(0), 1)
    for eval_trajectories, expected in ((7, 7), (None, 20)):
        cfg = make_cfg(*MAML_NAV, f"algo.eval_trajectories={'null' if eval_trajectories is None else eval_trajectories}")
        learner = build_learner(cfg, "navigation", source.image_shape, None, source.action_size)
        sampled.clear()
        assert learner.trial_returns(tasks).shape == (cfg.algo.eval_inner_steps + 1,)
        assert sampled == [expected] * (cfg.algo.eval_inner_steps + 1)


def test_the_policy_can_start_as_the_authors_did(make_cfg):
    """algo.policy_init=xavier: every linear layer of the policy (body and mean) starts with
    zero biases and Xavier-uniform weights, bounded by sqrt(6 / (fan_in + fan_out)); torch's
    defaults (the key's default) draw nonzero biases."""
    from metarun.algorithms import build_learner
    source = NavigationSource((-0.5, 0.5), 10, 0.1, "distance", 0.01)
    layers = {}
    for init in ("torch", "xavier"):
        torch.manual_seed(0)
        learner = build_learner(make_cfg(*MAML_NAV, f"algo.policy_init={init}"), "navigation",
                                source.image_shape, None, source.action_size)
        layers[init] = [m for m in learner.policy.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers["xavier"]) == 3  # two hidden layers and the mean
    for layer in layers["xavier"]:
        fan_out, fan_in = layer.weight.shape
        assert torch.count_nonzero(layer.bias) == 0
        assert layer.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.std() > 0.5 * (2 / (fan_in + fan_out)) ** 0.5  # drawn, not zeros
    assert all(torch.count_nonzero(layer.bias) > 0 for layer in layers["torch"])


@pytest.mark.parametrize("outer_step", ["a2c", "trpo"])
def test_meta_rl_runs_resume_to_the_same_parameters(make_cfg, tmp_path, outer_step):
    """RL² under either slow learner (TRPO's refitted value head is part of the parameters)."""
    small = ("trainer.val_every=0", "eval.episodes=5", "trainer.ckpt_every=20", "backbone.hidden=32",
             "algo.meta_batch=16", f"algo.outer_step={outer_step}")
    straight = make_cfg(*RL2, "trainer.max_steps=40", *small)
    run(straight, tmp_path / "straight")
    halfway = make_cfg(*RL2, "trainer.max_steps=20", *small)
    run(halfway, tmp_path / "resumed")
    (tmp_path / "resumed" / "results.json").unlink()
    resumed = make_cfg(*RL2, "trainer.max_steps=40", *small, "trainer.resume=true")
    run(resumed, tmp_path / "resumed")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


TINY_NAV = (*MAML_NAV, "backbone.hidden=[16]", "algo.meta_batch=4", "algo.trajectories=4", "data.horizon=20",
            "trainer.val_every=0", "eval.episodes=4", "trainer.log_every=1")


def test_maml_trpo_resumes_to_the_same_parameters_and_keeps_the_scheduled_trust_region(make_cfg, tmp_path):
    """The learner takes its own outer step (the trainer's optimiser never steps): an
    interrupted run resumes to the same parameters, and each step's KL stays within max_kl
    scaled by the schedule (linear to a tenth here)."""
    schedule = ("algo.scheduler.name=linear", "algo.scheduler.end_factor=0.1", "algo.scheduler.total_steps=6")
    run(make_cfg(*TINY_NAV, *schedule, "trainer.max_steps=6"), tmp_path / "straight")
    run(make_cfg(*TINY_NAV, *schedule, "trainer.max_steps=3"), tmp_path / "resumed")
    (tmp_path / "resumed" / "results.json").unlink()
    run(make_cfg(*TINY_NAV, *schedule, "trainer.max_steps=6", "trainer.resume=true"), tmp_path / "resumed")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "train/kl" in r]
    assert len(steps) == 6 and sum(r["train/accepted"] for r in steps) >= 4
    # lr / 1e-3 is the schedule's factor; a record's lr is the next step's (logged after the step)
    for record, lr_used in zip(steps, [1e-3] + [r["lr"] for r in steps]):
        assert record["train/kl"] <= 0.01 * lr_used / 1e-3 * (1 + 1e-6), record
    assert steps[-1]["lr"] < 0.5e-3  # the schedule did shrink the region


def test_the_pretrained_baseline_is_trpo_on_all_tasks_without_an_inner_step(make_cfg, tmp_path):
    """algo.inner_steps=0: one policy trained by TRPO on the task mixture (the MAML paper's
    "pretrained" comparison), adapted only at test."""
    run(make_cfg(*TINY_NAV, "algo.inner_steps=0", "trainer.max_steps=3"), tmp_path)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "train/kl" in r]
    assert len(steps) == 3 and all(r["train/accepted"] == 1.0 and 0 < r["train/kl"] <= 0.01 for r in steps)
    assert not any("train/return_before_adaptation" in r for r in steps)


@pytest.mark.parametrize("overrides, key", [
    (("algo=rl2", "data=omniglot", "backbone=gru"), "data"),
    (("algo=protonet", "data=bandits", "backbone=gru"), "data"),
    (("algo=anil", "data=navigation2d", "backbone=mlp"), "data"),
    ((*RL2, "data.arms=0"), "data.arms"),
    ((*RL2, "data.references=[random,gittins]"), "data.references"),
    ((*MAML_NAV, "data.reward=manhattan"), "data.reward"),
    ((*MAML_NAV, "algo.outer_step=sgd"), "algo.outer_step"),
    ((*MAML_NAV, "algo.trpo.max_kl=0"), "algo.trpo.max_kl"),
    ((*MAML_NAV, "algo.trpo.backtrack_ratio=1.5"), "algo.trpo.backtrack_ratio"),
    ((*MAML_NAV, "algo.trpo.cg_iterations=0"), "algo.trpo.cg_iterations"),
    ((*MAML_NAV, "trainer.cuda_graph=true"), "trainer.cuda_graph"),
    ((*MAML_NAV, "algo.eval_inner_lrs=[0.5,0.25]"), "algo.eval_inner_lrs"),
    ((*MAML_NAV, "algo.eval_inner_lrs=[0.5,0,0.25]"), "algo.eval_inner_lrs"),
    ((*MAML_NAV, "algo.eval_trajectories=0"), "algo.eval_trajectories"),
    ((*MAML_NAV, "algo.policy_init=kaiming"), "algo.policy_init"),
    (("algo=rl2", "data=bandits", "backbone=conv4"), "backbone"),
])
def test_meta_rl_bad_values_name_the_key(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*overrides))
    assert error.value.key == key


def test_a_diverged_trpo_run_names_the_trust_region_among_what_to_lower():
    from omegaconf import OmegaConf
    from torch import nn

    from metarun.engine.divergence import DivergedError, check_step_is_finite
    cfg = OmegaConf.create({"inner_lr": 0.5, "outer_step": "trpo", "trpo": {"max_kl": 0.01},
                            "optimizer": {"lr": 1.0}})
    with pytest.raises(DivergedError, match=r"algo\.inner_lr=0\.5.*algo\.trpo\.max_kl=0\.01"):
        check_step_is_finite(3, {"loss": float("nan")}, nn.Linear(2, 2), cfg, saved_step=2)
