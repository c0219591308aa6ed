"""Hand-designed policies run on the same test tasks as a meta-learner, so that its return sits
next to known answers: for bandits random, epsilon-greedy, UCB1 and Thompson sampling; for
navigation a policy that knows the goal (oracle) and a random one; for Gymnasium task families a
random one."""
from __future__ import annotations

import numpy as np
import torch

from metarun.data.bandits import BanditTasks
from metarun.data.navigation2d import NavigationTasks
from metarun.errors import ConfigError

BANDIT_POLICIES = ("random", "epsilon_greedy", "ucb1", "thompson")
NAVIGATION_POLICIES = ("random", "oracle")
GYM_POLICIES = ("random",)


def bandit_returns(tasks: BanditTasks, policy: str, seed: int, epsilon: float = 0.1,
                   ucb_c: float = 2 ** 0.5) -> np.ndarray:
    """Total reward [T] of ``policy`` on each task (vectorised over tasks)."""
    probs, luck = tasks.probs.cpu().numpy(), tasks.luck.cpu().numpy()
    n_tasks, arms = probs.shape
    rng = np.random.default_rng(seed)
    successes, pulls, total = np.zeros((n_tasks, arms)), np.zeros((n_tasks, arms)), np.zeros(n_tasks)
    rows = np.arange(n_tasks)
    for t in range(tasks.horizon):
        tie_break = 1e-9 * rng.random((n_tasks, arms))
        if policy == "random":
            arm = rng.integers(arms, size=n_tasks)
        elif policy == "epsilon_greedy":  # greedy on the posterior mean under a uniform prior
            arm = np.argmax((successes + 1) / (pulls + 2) + tie_break, axis=1)
            explore = rng.random(n_tasks) < epsilon
            arm[explore] = rng.integers(arms, size=int(explore.sum()))
        elif policy == "ucb1":  # Auer et al. 2002: every arm once, then mean + c sqrt(ln t / n)
            bonus = ucb_c * np.sqrt(np.log(max(t, 1)) / np.maximum(pulls, 1))
            index = np.where(pulls > 0, successes / np.maximum(pulls, 1) + bonus, np.inf)
            arm = np.argmax(index + tie_break, axis=1)
        elif policy == "thompson":  # a draw from each arm's Beta posterior (uniform prior)
            arm = np.argmax(rng.beta(successes + 1, pulls - successes + 1), axis=1)
        else:
            raise ConfigError("data.references", policy, f"names from {', '.join(BANDIT_POLICIES)}")
        reward = (luck[rows, t, arm] < probs[rows, arm]).astype(np.float64)
        successes[rows, arm] += reward
        pulls[rows, arm] += 1
        total += reward
    return total


def episode_totals(tasks, act, trajectories: int) -> torch.Tensor:
    """Each episode's return [T, trajectories] when acting by ``act(observations)`` (normalised
    actions) on a continuous-control family's tasks (``simulate``: navigation, Gymnasium)."""
    episodes = tasks.simulate(trajectories)
    observations = episodes.reset()
    alive = torch.ones(observations.shape[:2], dtype=torch.bool)
    total = torch.zeros(observations.shape[:2])
    for _ in range(tasks.horizon):
        observations, rewards, ended = episodes.step(act(observations))
        total += rewards * alive
        alive &= ~ended
    return total


def navigation_returns(tasks: NavigationTasks, policy: str, trajectories: int, seed: int) -> np.ndarray:
    """Mean return [T] of ``policy`` over ``trajectories`` trajectories on each task."""
    generator = torch.Generator().manual_seed(seed)
    tasks = tasks.to("cpu")
    goals = tasks.goals.unsqueeze(1)
    if policy == "oracle":  # straight to the goal at full speed (observations are positions)
        def act(positions):
            return (goals - positions) / tasks.max_action
    elif policy == "random":  # uniform over the action box
        def act(positions):
            return torch.rand(positions.shape, generator=generator) * 2 - 1
    else:
        raise ConfigError("data.references", policy, f"names from {', '.join(NAVIGATION_POLICIES)}")
    return episode_totals(tasks, act, trajectories).mean(dim=1).numpy()


def random_returns(tasks, trajectories: int, seed: int) -> np.ndarray:
    """Mean return [T] of uniform random actions over ``trajectories`` episodes of each task of a
    Gymnasium family (``GymTasks``)."""
    generator = torch.Generator().manual_seed(seed)

    def act(observations):
        return torch.rand(*observations.shape[:2], tasks.source.action_size, generator=generator) * 2 - 1

    return episode_totals(tasks, act, trajectories).double().mean(dim=1).numpy()


def reference_returns(data_cfg, tasks, seed: int) -> dict[str, np.ndarray]:
    """Per-task returns of each policy named in ``data_cfg.references`` on ``tasks``."""
    if isinstance(tasks, BanditTasks):
        return {name: bandit_returns(tasks, name, seed, data_cfg.epsilon, data_cfg.ucb_c)
                for name in data_cfg.references}
    if data_cfg.name == "gym":
        return {name: random_returns(tasks, data_cfg.reference_trajectories, seed) for name in data_cfg.references}
    return {name: navigation_returns(tasks, name, data_cfg.reference_trajectories, seed)
            for name in data_cfg.references}
