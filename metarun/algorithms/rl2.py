"""RL²: fast reinforcement learning via slow reinforcement learning (Duan et al. 2016).

A recurrent policy plays a whole trial on one task -- here ``horizon`` pulls of a Bernoulli
bandit -- and its hidden state is never reset within the trial, so what it learns about the task
lives in its activations (the "fast" learner). Its weights are trained across tasks by an
ordinary policy-gradient method (the "slow" learner) to maximise the total reward of a trial.

Each step the GRU reads (previous action one-hot, previous reward, 1 if there was a previous
step): a bandit's episodes are single pulls, so the paper's termination flag is constant and
the observation empty; the third input marks the first pull.

Two slow learners (``algo.outer_step``). ``a2c``, advantage actor-critic: one gradient step
per meta-batch of trials on

    loss = -mean(log pi(a_t) * A_t) + value_coef * mean((V_t - R_t)^2) - entropy_coef * mean(H[pi])

with A_t the generalised advantage estimate (gamma, lambda; the trial's end is terminal),
normalised over the batch, and R_t = A_t + V_t the value target. ``trpo``, the paper's: TRPO's
step (metarun/rl/trpo.py) on the GRU and the policy head, maximising mean(pi/pi_old * A_t)
within a mean KL of ``max_kl`` between the old and new action distributions along the trials
as played (each trial replayed with its own actions and rewards, which the bandit's luck fixes).
The value head then plays the part of rllab's refitted baseline: A_t comes from its current
weights, after which they are refitted by ridge regression of the batch's discounted returns on
the hidden states (no optimiser state, so a resumed run takes the same steps).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, OuterStep
from metarun.data.bandits import BanditTasks
from metarun.rl.advantages import discounted_returns, gae
from metarun.rl.randomness import task_generator
from metarun.rl.trpo import TrustRegion, trust_region_step

# the ridge of the value head's refit under TRPO (hidden states are in [-1, 1])
VALUE_RIDGE = 1e-3


class RL2(MetaLearner):
    def __init__(self, core: nn.Module, arms: int, cfg):
        super().__init__("bandit")
        self.core, self.arms = core, arms
        self.policy_head = nn.Linear(core.out_features, arms)
        self.value_head = nn.Linear(core.out_features, 1)
        self.gamma, self.gae_lambda = cfg.gamma, cfg.gae_lambda
        self.value_coef, self.entropy_coef = cfg.value_coef, cfg.entropy_coef
        self.owns_outer_update = cfg.outer_step == "trpo"
        self.trust_region = TrustRegion(**cfg.trpo) if self.owns_outer_update else None

    @staticmethod
    def input_size(arms: int) -> int:
        return arms + 2

    def play(self, tasks: BanditTasks, generator: torch.Generator, actions: torch.Tensor | None = None):
        """One trial on each task: logits [T, H, arms], values [T, H], actions and rewards [T, H],
        hidden states [T, H, hidden]. Given ``actions`` [T, H], the trials are replayed with them
        (the same rewards: a task's luck fixes each pull's outcome) instead of sampled."""
        n, device = len(tasks), tasks.probs.device
        state = self.core.initial_state(n, device)
        step_input = torch.zeros(n, self.input_size(self.arms), device=device)
        logits, values, chosen, rewards, states = [], [], [], [], []
        for t in range(tasks.horizon):
            state = self.core(step_input, state)
            step_logits = self.policy_head(state)
            if actions is None:
                arm = torch.multinomial(F.softmax(step_logits.detach().float(), -1), 1, generator=generator).squeeze(1)
            else:
                arm = actions[:, t]
            reward = tasks.pull(t, arm)
            step_input = torch.cat([F.one_hot(arm, self.arms).float(), reward.unsqueeze(1),
                                    torch.ones(n, 1, device=device)], dim=1)
            logits.append(step_logits)
            values.append(self.value_head(state).squeeze(1))
            chosen.append(arm)
            rewards.append(reward)
            states.append(state)
        return (torch.stack(logits, 1).float(), torch.stack(values, 1).float(), torch.stack(chosen, 1),
                torch.stack(rewards, 1), torch.stack(states, 1))

    def meta_train_step(self, tasks: BanditTasks) -> dict[str, float]:
        logits, values, actions, rewards, _ = self.play(tasks, task_generator(tasks, tasks.probs.device))
        advantages = gae(rewards, values.detach(), self.gamma, self.gae_lambda)
        targets = advantages + values.detach()
        advantages = standardised(advantages)
        log_probs = F.log_softmax(logits, -1)
        chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        value_loss = (values - targets).pow(2).mean()
        loss = -(chosen * advantages).mean() + self.value_coef * value_loss - self.entropy_coef * entropy
        loss.backward()
        return {"return": float(rewards.sum(1).mean()), "value_loss": value_loss.item(),
                "entropy": entropy.item()}

    def meta_update(self, tasks: BanditTasks, outer: OuterStep) -> dict[str, float]:
        """TRPO's step on the trials of this meta-batch (``algo.outer_step=trpo``), then the value
        head refitted to their discounted returns."""
        with torch.no_grad():
            old_logits, values, actions, rewards, states = self.play(tasks, task_generator(tasks, tasks.probs.device))
        advantages = standardised(gae(rewards, values, self.gamma, self.gae_lambda))
        old_log_probs = F.log_softmax(old_logits, -1)
        old_chosen = old_log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

        def loss_and_kl(differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.set_grad_enabled(differentiable):
                log_probs = F.log_softmax(self.play(tasks, None, actions)[0], -1)
                ratio = (log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - old_chosen).exp()
                kl = (old_log_probs.exp() * (old_log_probs - log_probs)).sum(-1).mean()
                return -(ratio * advantages).mean(), kl

        region = replace(self.trust_region, max_kl=self.trust_region.max_kl * outer.scale)
        policy = [*self.core.parameters(), *self.policy_head.parameters()]
        with torch.enable_grad():
            diagnostics = trust_region_step(policy, loss_and_kl, region, outer.average)
        value_error = self.refit_value_head(states, discounted_returns(rewards, self.gamma), outer.average)
        return {"return": float(rewards.sum(1).mean()), "value_loss": value_error, **diagnostics}

    @torch.no_grad()
    def refit_value_head(self, states: torch.Tensor, returns: torch.Tensor, average) -> float:
        """Ridge regression of ``returns`` [T, H] on ``states`` [T, H, hidden] and a constant,
        written into the value head (the normal equations averaged over a torchrun job's
        processes, so every process fits the same head); returns the mean squared error before
        the fit."""
        error = float(average((self.value_head(states).squeeze(-1) - returns).pow(2).mean()))
        design = torch.cat([states, torch.ones_like(states[..., :1])], -1).flatten(0, 1).double()
        gram, moment = average(design.T @ design), average(design.T @ returns.flatten().double())
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        coefficients = torch.linalg.solve(gram / len(design) + VALUE_RIDGE * eye, moment / len(design)).float()
        self.value_head.weight.copy_(coefficients[:-1].unsqueeze(0))
        self.value_head.bias.copy_(coefficients[-1:])
        return error

    def trial_returns(self, task: BanditTasks) -> torch.Tensor:
        """The total reward of one trial on ``task`` (a one-element vector)."""
        rewards = self.play(task, task_generator(task, task.probs.device))[3]
        return rewards.sum(1)


def standardised(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit (sample) standard deviation over the whole batch of trials."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
