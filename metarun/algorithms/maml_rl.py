"""MAML for reinforcement learning (Finn, Abbeel & Levine 2017, Algorithm 3), on 2D navigation.

    for each task T_i in the meta-batch:
        sample K trajectories D_i with f_theta; fit the linear-feature baseline on D_i
        theta_i' = theta - alpha * grad_theta L_{T_i}(f_theta; D_i)        (REINFORCE, inner steps)
        sample K trajectories D_i' with f_{theta_i'}
    theta <- outer step on sum_i L_{T_i}(f_{theta_i'}; D_i')                (trainer's optimiser)

with L(f; D) = -mean over the valid steps of D of log f(a_t | s_t) * A_t, A_t the discounted
return-to-go minus the baseline's estimate, normalised. The policy is a Gaussian whose mean is
the backbone (an MLP) plus a linear layer and whose log standard deviation is a learned vector,
adapted with the rest. The paper's outer optimiser was TRPO; here the outer step is the
trainer's (Adam on the policy gradient above), and the outer gradient flows through the inner
step (second order unless ``first_order``). As in the paper, the dependence of the inner
trajectories' distribution on theta is not differentiated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarun.algorithms.base import MetaLearner
from metarun.data.navigation2d import ACTION_SIZE, NavigationTasks
from metarun.rl.advantages import discounted_returns, linear_feature_baseline, normalise
from metarun.rl.randomness import task_generator

Params = dict[str, torch.Tensor]


class GaussianPolicy(nn.Module):
    def __init__(self, body: nn.Module, action_size: int):
        super().__init__()
        self.body = body
        self.mean = nn.Linear(body.out_features, action_size)
        self.log_std = nn.Parameter(torch.zeros(action_size))  # standard deviation 1 at the start

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(self.body(observations)), self.log_std.expand(*observations.shape[:-1], -1)


@dataclass
class Trajectories:
    """``observations``, ``actions`` [N, H, 2]; ``rewards``, ``mask`` [N, H] (mask: the step was
    taken before the goal was reached)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    def returns(self) -> torch.Tensor:
        """Each trajectory's undiscounted return [N]."""
        return (self.rewards * self.mask).sum(-1)


class MAMLPolicyGradient(MetaLearner):
    def __init__(self, body: nn.Module, cfg):
        super().__init__("navigation")
        self.policy = GaussianPolicy(body, ACTION_SIZE)
        self.first_order = cfg.first_order
        self.inner_lr, self.inner_steps, self.eval_inner_steps = cfg.inner_lr, cfg.inner_steps, cfg.eval_inner_steps
        self.trajectories, self.gamma = cfg.trajectories, cfg.gamma

    def rollout(self, params: Params, tasks: NavigationTasks, generator: torch.Generator) -> list[Trajectories]:
        """``self.trajectories`` trajectories on each task with ``params`` stacked along a leading
        task dimension (each task its own policy). No gradient: the loss re-evaluates the policy."""
        with torch.no_grad():
            policy = vmap(lambda p, obs: functional_call(self.policy, p, (obs,)))
            positions = tasks.start(self.trajectories)
            alive = torch.ones(positions.shape[:2], dtype=torch.bool, device=positions.device)
            steps = []
            for _ in range(tasks.horizon):
                mean, log_std = policy(params, positions)
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                actions = mean + log_std.exp() * noise
                next_positions, rewards, reached = tasks.step(positions, actions)
                steps.append((positions, actions, rewards, alive))
                alive = alive & ~reached
                positions = next_positions
        observations, actions, rewards, mask = (torch.stack(parts, dim=2) for parts in zip(*steps))
        return [Trajectories(observations[i], actions[i], rewards[i], mask[i]) for i in range(len(tasks))]

    def surrogate_loss(self, params: Params, batch: Trajectories) -> torch.Tensor:
        """-mean log pi(a|s) * A over the valid steps: the REINFORCE loss, with baseline."""
        returns = discounted_returns(batch.rewards * batch.mask, self.gamma)
        baseline = linear_feature_baseline(batch.observations, returns, batch.mask)
        advantages = normalise(returns - baseline, batch.mask)
        mean, log_std = functional_call(self.policy, params, (batch.observations,))
        log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(batch.actions).sum(-1)
        return -(log_prob * advantages * batch.mask).sum() / batch.mask.sum()

    def inner_step(self, params: Params, batch: Trajectories, create_graph: bool) -> Params:
        loss = self.surrogate_loss(params, batch)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        return {name: p - self.inner_lr * g for (name, p), g in zip(params.items(), grads)}

    def meta_train_step(self, tasks: NavigationTasks) -> dict[str, float]:
        generator = task_generator(tasks, tasks.goals.device)
        fast = [dict(self.policy.named_parameters())] * len(tasks)
        metrics = {}
        for step in range(self.inner_steps):
            batches = self.rollout(stack(fast), tasks, generator)
            if step == 0:
                metrics["return_before_adaptation"] = mean_return(batches)
            fast = [self.inner_step(p, b, create_graph=not self.first_order) for p, b in zip(fast, batches)]
        adapted = self.rollout(stack(fast), tasks, generator)
        for params, batch in zip(fast, adapted):
            (self.surrogate_loss(params, batch) / len(tasks)).backward()
        return {"return": mean_return(adapted), **metrics}

    def trial_returns(self, task: NavigationTasks) -> torch.Tensor:
        """Mean return on ``task`` after 0, 1, ..., ``eval_inner_steps`` policy-gradient steps,
        each step taken on trajectories sampled from the policy it updates."""
        generator = task_generator(task, task.goals.device)
        params = {k: v.detach().requires_grad_() for k, v in self.policy.named_parameters()}
        returns = []
        with torch.enable_grad():
            for step in range(self.eval_inner_steps + 1):
                batch = self.rollout(stack([params]), task, generator)[0]
                returns.append(batch.returns().mean())
                if step < self.eval_inner_steps:
                    params = {k: v.detach().requires_grad_()
                              for k, v in self.inner_step(params, batch, create_graph=False).items()}
        return torch.stack(returns)


def mean_return(batches: list[Trajectories]) -> float:
    return float(torch.stack([b.returns().mean() for b in batches]).mean())


def stack(per_task: list[Params]) -> Params:
    return {name: torch.stack([p[name] for p in per_task]) for name in per_task[0]}
