"""RL²: fast reinforcement learning via slow reinforcement learning (Duan et al. 2016).

A recurrent policy plays a whole trial on one task -- here ``horizon`` pulls of a Bernoulli
bandit -- and its hidden state is never reset within the trial, so what it learns about the task
lives in its activations (the "fast" learner). Its weights are trained across tasks by an
ordinary policy-gradient method (the "slow" learner) to maximise the total reward of a trial.

Each step the GRU reads (previous action one-hot, previous reward, 1 if there was a previous
step): a bandit's episodes are single pulls, so the paper's termination flag is constant and
the observation empty; the third input marks the first pull.

The paper trained with TRPO; the slow learner here is advantage actor-critic (A2C): one
gradient step per meta-batch of trials on

    loss = -mean(log pi(a_t) * A_t) + value_coef * mean((V_t - R_t)^2) - entropy_coef * mean(H[pi])

with A_t the generalised advantage estimate (gamma, lambda; the trial's end is terminal),
normalised over the batch, and R_t = A_t + V_t the value target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner
from metarun.data.bandits import BanditTasks
from metarun.rl.advantages import gae
from metarun.rl.randomness import task_generator


class RL2(MetaLearner):
    def __init__(self, core: nn.Module, arms: int, cfg):
        super().__init__("bandit")
        self.core, self.arms = core, arms
        self.policy_head = nn.Linear(core.out_features, arms)
        self.value_head = nn.Linear(core.out_features, 1)
        self.gamma, self.gae_lambda = cfg.gamma, cfg.gae_lambda
        self.value_coef, self.entropy_coef = cfg.value_coef, cfg.entropy_coef

    @staticmethod
    def input_size(arms: int) -> int:
        return arms + 2

    def play(self, tasks: BanditTasks, generator: torch.Generator):
        """One trial on each task: logits [T, H, arms], values [T, H], actions and rewards [T, H]."""
        n, device = len(tasks), tasks.probs.device
        state = self.core.initial_state(n, device)
        step_input = torch.zeros(n, self.input_size(self.arms), device=device)
        logits, values, actions, rewards = [], [], [], []
        for t in range(tasks.horizon):
            state = self.core(step_input, state)
            step_logits = self.policy_head(state)
            arm = torch.multinomial(F.softmax(step_logits.detach().float(), -1), 1, generator=generator).squeeze(1)
            reward = tasks.pull(t, arm)
            step_input = torch.cat([F.one_hot(arm, self.arms).float(), reward.unsqueeze(1),
                                    torch.ones(n, 1, device=device)], dim=1)
            logits.append(step_logits)
            values.append(self.value_head(state).squeeze(1))
            actions.append(arm)
            rewards.append(reward)
        return (torch.stack(logits, 1).float(), torch.stack(values, 1).float(), torch.stack(actions, 1),
                torch.stack(rewards, 1))

    def meta_train_step(self, tasks: BanditTasks) -> dict[str, float]:
        logits, values, actions, rewards = self.play(tasks, task_generator(tasks, tasks.probs.device))
        advantages = gae(rewards, values.detach(), self.gamma, self.gae_lambda)
        targets = advantages + values.detach()
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_probs = F.log_softmax(logits, -1)
        chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        value_loss = (values - targets).pow(2).mean()
        loss = -(chosen * advantages).mean() + self.value_coef * value_loss - self.entropy_coef * entropy
        loss.backward()
        return {"return": float(rewards.sum(1).mean()), "value_loss": value_loss.item(),
                "entropy": entropy.item()}

    def trial_returns(self, task: BanditTasks) -> torch.Tensor:
        """The total reward of one trial on ``task`` (a one-element vector)."""
        _, _, _, rewards = self.play(task, task_generator(task, task.probs.device))
        return rewards.sum(1)
