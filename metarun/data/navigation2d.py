"""2D point navigation, the MAML paper's meta-RL task family (Finn et al. 2017, Sec. 5.3).

A point starts at the origin and must reach a goal drawn uniformly from [-0.5, 0.5]^2 within
``horizon`` steps; an action is a velocity, clipped to [-0.1, 0.1] per coordinate (policies act
in normalised units, [-1, 1], which ``step`` scales). The paper's
text calls the reward "the negative squared distance to the goal"; the authors' environment
(point_env_randgoal.py of cbfinn/maml_rl), which produced the published returns, pays the
negative distance. ``data.reward`` offers both (``distance`` is the default, so results compare
with the published numbers). As in that environment, an episode ends once both coordinates are
within 0.01 of the goal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.data.episodes import EpisodeSource

OBSERVATION_SIZE = 2  # the point's position
ACTION_SIZE = 2


@dataclass
class NavigationTasks:
    """A batch of navigation tasks: ``goals`` [T, 2] and ``seeds`` [T], which seed the acting
    policy's own randomness on each task. The rest is the task family's, shared by the batch."""

    goals: torch.Tensor
    seeds: torch.Tensor
    horizon: int
    max_action: float
    reward: str  # distance | squared_distance
    goal_tolerance: float

    def __len__(self) -> int:
        return self.goals.shape[0]

    def _with(self, goals, seeds) -> "NavigationTasks":
        return NavigationTasks(goals, seeds, self.horizon, self.max_action, self.reward, self.goal_tolerance)

    def select(self, tasks: slice) -> "NavigationTasks":
        return self._with(self.goals[tasks], self.seeds[tasks])

    def __getitem__(self, i: int) -> "NavigationTasks":
        return self.select(slice(i, i + 1))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device) -> "NavigationTasks":
        return self._with(self.goals.to(device), self.seeds)

    @staticmethod
    def cat(batches: list["NavigationTasks"]) -> "NavigationTasks":
        return batches[0]._with(torch.cat([b.goals for b in batches]), torch.cat([b.seeds for b in batches]))

    def start(self, n_trajectories: int) -> torch.Tensor:
        """Start positions [T, n_trajectories, 2]: the origin."""
        return self.goals.new_zeros(len(self), n_trajectories, OBSERVATION_SIZE)

    def step(self, positions: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``positions``, ``actions`` [T, N, 2] -> new positions, rewards [T, N] and whether each
        trajectory has reached its goal [T, N]. Actions are in normalised units: clipped to
        [-1, 1], then scaled to [-max_action, max_action] (as the ``normalize`` wrapper of the
        authors' code does), so a policy's initial noise is on the scale of the action box."""
        positions = positions + actions.clamp(-1, 1) * self.max_action
        offset = positions - self.goals.unsqueeze(1)
        squared = offset.pow(2).sum(-1)
        rewards = -squared if self.reward == "squared_distance" else -squared.sqrt()
        reached = (offset.abs() < self.goal_tolerance).all(-1)
        return positions, rewards, reached

    @property
    def device(self) -> torch.device:
        return self.goals.device

    def simulate(self, n_trajectories: int) -> "NavigationEpisodes":
        return NavigationEpisodes(self, n_trajectories)


class NavigationEpisodes:
    """``n_trajectories`` episodes on each task of a batch, played together: ``reset`` gives the
    first observations [T, N, 2], ``step(actions)`` the next ones, the rewards and whether each
    episode has ended [T, N] (the interface a policy-gradient learner rolls out through, shared
    with Gymnasium task families)."""

    def __init__(self, tasks: NavigationTasks, n_trajectories: int):
        self.tasks, self.n_trajectories = tasks, n_trajectories
        self.positions: torch.Tensor | None = None

    def reset(self) -> torch.Tensor:
        self.positions = self.tasks.start(self.n_trajectories)
        return self.positions

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.positions, rewards, reached = self.tasks.step(self.positions, actions)
        return self.positions, rewards, reached


class NavigationSource(EpisodeSource):
    metric = "return"
    kind = "navigation"
    image_shape = (OBSERVATION_SIZE,)  # what the policy network reads
    action_size = ACTION_SIZE

    def __init__(self, goal_range, horizon: int, max_action: float, reward: str, goal_tolerance: float,
                 device="cpu"):
        self.goal_range, self.horizon, self.max_action = tuple(goal_range), horizon, max_action
        self.reward, self.goal_tolerance, self.device = reward, goal_tolerance, device

    def to(self, device) -> "NavigationSource":
        self.device = device
        return self

    def sample(self, generator: torch.Generator, n_tasks: int) -> NavigationTasks:
        low, high = self.goal_range
        goals = torch.rand(n_tasks, OBSERVATION_SIZE, generator=generator) * (high - low) + low
        seeds = torch.randint(0, 2**62, (n_tasks,), generator=generator)
        return NavigationTasks(goals, seeds, self.horizon, self.max_action, self.reward,
                               self.goal_tolerance).to(self.device)
