"""MAML for reinforcement learning (Finn, Abbeel & Levine 2017, Algorithm 3), on 2D navigation.

    for each task T_i in the meta-batch:
        sample K trajectories D_i with f_theta; fit the linear-feature baseline on D_i
        theta_i' = theta - alpha * grad_theta L_{T_i}(f_theta; D_i)        (REINFORCE, inner steps)
        sample K trajectories D_i' with f_{theta_i'}
    theta <- outer step on sum_i L_{T_i}(f_{theta_i'}; D_i')

with L(f; D) = -mean over the valid steps of D of log f(a_t | s_t) * A_t, A_t the discounted
return-to-go minus the baseline's estimate, normalised. The policy is a Gaussian whose mean is
the backbone (an MLP) plus a linear layer and whose log standard deviation is a learned vector,
adapted with the rest; it acts in the task family's normalised action units ([-1, 1] per
coordinate, as the authors' code wraps its environments). The outer step is the paper's TRPO
(``algo.outer_step=trpo``): the surrogate pi_{theta_i'}(a|s) / pi_old(a|s) * A_t on D_i', averaged
over tasks, improved within a mean KL of ``algo.trpo.max_kl`` between the old and the new
adapted policies, both differentiated through the inner step (``metarun/rl/trpo.py``); or the
trainer's optimiser on the policy gradient (``adam``). The outer gradient flows through the
inner step (second order unless ``first_order``). As in the paper, the dependence of the inner
trajectories' distribution on theta is not differentiated.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarun.algorithms.base import MetaLearner, Metrics, OuterStep
from metarun.data.navigation2d import NavigationTasks
from metarun.rl.advantages import discounted_returns, linear_feature_baseline, normalise
from metarun.rl.randomness import task_generator
from metarun.rl.trpo import TrustRegion, trust_region_step

if TYPE_CHECKING:  # gymnasium is imported where data=gym is used
    from metarun.data.gym_tasks import GymTasks

Params = dict[str, torch.Tensor]
# a batch of tasks of a continuous-control family: ``simulate(n)`` plays n episodes of each
ControlTasks = "NavigationTasks | GymTasks"


class GaussianPolicy(nn.Module):
    def __init__(self, body: nn.Module, action_size: int, init: str = "torch"):
        super().__init__()
        self.body = body
        self.mean = nn.Linear(body.out_features, action_size)
        self.log_std = nn.Parameter(torch.zeros(action_size))  # standard deviation 1 at the start
        if init == "xavier":
            self.initialise_as_the_authors()

    def initialise_as_the_authors(self) -> None:
        """Xavier-uniform weights and zero biases in every linear layer, as the authors' policy
        starts (cbfinn/maml_rl, MAMLGaussianMLPPolicy.create_MLP), where torch's defaults draw
        weights up to 1/sqrt(fan_in) (0.71 in a first layer on 2D positions, against Xavier's
        0.24) and biases as wide."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(self.body(observations)), self.log_std.expand(*observations.shape[:-1], -1)


def log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action coordinates."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


@dataclass
class Trajectories:
    """``observations``, ``actions`` [N, H, 2]; ``rewards``, ``mask`` [N, H] (mask: the step was
    taken before the goal was reached); ``advantages`` [N, H], set by ``with_advantages``."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor | None = field(default=None)

    def returns(self) -> torch.Tensor:
        """Each trajectory's undiscounted return [N]."""
        return (self.rewards * self.mask).sum(-1)

    def with_advantages(self, gamma: float) -> "Trajectories":
        """The discounted returns-to-go minus the linear-feature baseline refitted to them,
        normalised: they depend on the data alone, so they are computed once per batch."""
        returns = discounted_returns(self.rewards * self.mask, gamma)
        baseline = linear_feature_baseline(self.observations, returns, self.mask)
        self.advantages = normalise(returns - baseline, self.mask)
        return self

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` [N, H] over the valid steps."""
        return (values * self.mask).sum() / self.mask.sum()


class MAMLPolicyGradient(MetaLearner):
    def __init__(self, body: nn.Module, action_size: int, kind: str, cfg):
        super().__init__(kind)
        self.policy = GaussianPolicy(body, action_size, cfg.get("policy_init", "torch"))
        self.first_order = cfg.first_order
        self.inner_lr, self.inner_steps, self.eval_inner_steps = cfg.inner_lr, cfg.inner_steps, cfg.eval_inner_steps
        # the test's step sizes, one per inner step (None: inner_lr for each)
        self.eval_inner_lrs = list(cfg.eval_inner_lrs) if cfg.get("eval_inner_lrs") is not None else None
        self.trajectories, self.gamma = cfg.trajectories, cfg.gamma
        # trajectories a test step samples (None: as in training; the authors' point test: 40)
        self.eval_trajectories = cfg.get("eval_trajectories") or cfg.trajectories
        self.owns_outer_update = cfg.outer_step == "trpo"
        self.trust_region = TrustRegion(**cfg.trpo) if self.owns_outer_update else None

    def rollout(self, params: Params, tasks: ControlTasks, generators: list[torch.Generator],
                trajectories: int | None = None) -> list[Trajectories]:
        """``trajectories`` (default: ``self.trajectories``) trajectories on each task with
        ``params`` stacked along a leading task dimension (each task its own policy), with their
        advantages. Each task's action noise comes from its own generator (``generators``), so a
        task is played the same way whichever tasks share its meta-batch or its process under
        torchrun. No gradient: the loss re-evaluates the policy."""
        with torch.no_grad():
            policy = vmap(lambda p, obs: functional_call(self.policy, p, (obs,)))
            episodes = tasks.simulate(trajectories or self.trajectories)
            observations = episodes.reset()
            alive = torch.ones(observations.shape[:2], dtype=torch.bool, device=observations.device)
            steps = []
            for _ in range(tasks.horizon):
                mean, log_std = policy(params, observations)
                noise = torch.stack([torch.randn(mean.shape[1:], generator=g, device=mean.device)
                                     for g in generators])
                actions = mean + log_std.exp() * noise
                next_observations, rewards, ended = episodes.step(actions)
                steps.append((observations, actions, rewards, alive))
                alive = alive & ~ended
                observations = next_observations
        observations, actions, rewards, mask = (torch.stack(parts, dim=2) for parts in zip(*steps))
        return [Trajectories(observations[i], actions[i], rewards[i], mask[i]).with_advantages(self.gamma)
                for i in range(len(tasks))]

    def surrogate_loss(self, params: Params, batch: Trajectories) -> torch.Tensor:
        """-mean log pi(a|s) * A over the valid steps: the REINFORCE loss, with baseline."""
        mean, log_std = functional_call(self.policy, params, (batch.observations,))
        return -batch.mean(log_prob(mean, log_std, batch.actions) * batch.advantages)

    def inner_step(self, params: Params, batch: Trajectories, create_graph: bool, lr: float | None = None) -> Params:
        loss = self.surrogate_loss(params, batch)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        lr = self.inner_lr if lr is None else lr
        return {name: p - lr * g for (name, p), g in zip(params.items(), grads)}

    def adapt(self, tasks: ControlTasks, generators: list[torch.Generator], create_graph: bool
              ) -> tuple[list[Params], list[list[Trajectories]]]:
        """Each task's adapted parameters after ``inner_steps`` policy-gradient steps, and the
        trajectories of each step ([step][task]), each sampled with the policy it updates."""
        fast = [dict(self.policy.named_parameters())] * len(tasks)
        inner_batches = []
        for _ in range(self.inner_steps):
            batches = self.rollout(stack(fast), tasks, generators)
            inner_batches.append(batches)
            fast = [self.inner_step(p, b, create_graph) for p, b in zip(fast, batches)]
        return fast, inner_batches

    def readapt(self, inner_batches: list[list[Trajectories]], n_tasks: int, create_graph: bool) -> list[Params]:
        """The adapted parameters from the current meta-parameters on trajectories already sampled."""
        fast = [dict(self.policy.named_parameters())] * n_tasks
        for batches in inner_batches:
            fast = [self.inner_step(p, b, create_graph) for p, b in zip(fast, batches)]
        return fast

    def meta_train_step(self, tasks: ControlTasks) -> Metrics:
        """The gradient of the adapted policies' REINFORCE loss, for the trainer's optimiser."""
        generators = [task_generator(task, task.device) for task in tasks]
        fast, inner_batches = self.adapt(tasks, generators, create_graph=not self.first_order)
        adapted = self.rollout(stack(fast), tasks, generators)
        for params, batch in zip(fast, adapted):
            (self.surrogate_loss(params, batch) / len(tasks)).backward()
        return self.returns_metrics(inner_batches, adapted)

    def meta_update(self, tasks: ControlTasks, outer: OuterStep) -> Metrics:
        """TRPO's step on the adapted policies' importance-weighted surrogate, within a mean KL
        of ``max_kl`` (scaled by the schedule) between their old and new action distributions on
        the post-adaptation trajectories, both as functions of the meta-parameters through the
        inner step (Finn et al. 2017, Sec. 5.3; Schulman et al. 2015)."""
        generators = [task_generator(task, task.device) for task in tasks]
        with torch.enable_grad():
            fast, inner_batches = self.adapt(tasks, generators, create_graph=False)
        adapted = self.rollout(stack(fast), tasks, generators)
        with torch.no_grad():  # copies: with no inner step they would be views of the parameters it moves
            old = [tuple(t.clone() for t in functional_call(self.policy, p, (b.observations,)))
                   for p, b in zip(fast, adapted)]
        old_log_probs = [log_prob(mean, log_std, b.actions) for (mean, log_std), b in zip(old, adapted)]

        def loss_and_kl(differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
            losses, kls = [], []
            for params, batch, (old_mean, old_log_std), old_log_prob in zip(
                    self.readapt(inner_batches, len(tasks), differentiable and not self.first_order), adapted, old,
                    old_log_probs):
                mean, log_std = functional_call(self.policy, params, (batch.observations,))
                ratio = (log_prob(mean, log_std, batch.actions) - old_log_prob).exp()
                losses.append(-batch.mean(ratio * batch.advantages))
                kls.append(batch.mean(gaussian_kl(old_mean, old_log_std, mean, log_std)))
            return torch.stack(losses).mean(), torch.stack(kls).mean()

        region = replace(self.trust_region, max_kl=self.trust_region.max_kl * outer.scale)
        with torch.enable_grad():
            diagnostics = trust_region_step([p for p in self.policy.parameters()], loss_and_kl, region, outer.average)
        return {**self.returns_metrics(inner_batches, adapted), **diagnostics}

    @staticmethod
    def returns_metrics(inner_batches: list[list[Trajectories]], adapted: list[Trajectories]) -> Metrics:
        metrics = {"return": mean_return(adapted)}
        if inner_batches:
            metrics["return_before_adaptation"] = mean_return(inner_batches[0])
        return metrics

    def trial_returns(self, task: ControlTasks) -> torch.Tensor:
        """Mean return on ``task`` after 0, 1, ..., ``eval_inner_steps`` policy-gradient steps,
        each step taken on trajectories sampled from the policy it updates."""
        generators = [task_generator(task, task.device)]
        params = {k: v.detach().requires_grad_() for k, v in self.policy.named_parameters()}
        returns = []
        with torch.enable_grad():
            for step in range(self.eval_inner_steps + 1):
                batch = self.rollout(stack([params]), task, generators, self.eval_trajectories)[0]
                returns.append(batch.returns().mean())
                if step < self.eval_inner_steps:
                    lr = self.eval_inner_lrs[step] if self.eval_inner_lrs else None
                    params = {k: v.detach().requires_grad_()
                              for k, v in self.inner_step(params, batch, create_graph=False, lr=lr).items()}
        return torch.stack(returns)


def mean_return(batches: list[Trajectories]) -> float:
    return float(torch.stack([b.returns().mean() for b in batches]).mean())


def stack(per_task: list[Params]) -> Params:
    return {name: torch.stack([p[name] for p in per_task]) for name in per_task[0]}
