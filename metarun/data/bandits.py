"""Multi-armed Bernoulli bandits, the RL² paper's task family (Duan et al. 2016, Sec. 3.1).

A task draws each arm's success probability from U[0, 1]; a trial is ``horizon`` pulls. The
luck of every (pull, arm) pair is drawn with the task (``luck``: pulling arm k at pull t pays 1
when ``luck[t, k] < probs[k]``), so the reward a policy receives depends only on the task and
its own choices: every policy scored on the same test tasks meets the same luck, and their
comparison is paired (common random numbers).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.data.episodes import EpisodeSource


@dataclass
class BanditTasks:
    """A batch of bandit tasks: ``probs`` [T, arms], ``luck`` [T, horizon, arms], and ``seeds``
    [T], which seed the acting policy's own randomness on each task."""

    probs: torch.Tensor
    luck: torch.Tensor
    seeds: torch.Tensor

    @property
    def arms(self) -> int:
        return self.probs.shape[-1]

    @property
    def horizon(self) -> int:
        return self.luck.shape[1]

    def __len__(self) -> int:
        return self.probs.shape[0]

    def select(self, tasks: slice) -> "BanditTasks":
        return BanditTasks(self.probs[tasks], self.luck[tasks], self.seeds[tasks])

    def __getitem__(self, i: int) -> "BanditTasks":
        return self.select(slice(i, i + 1))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device) -> "BanditTasks":
        return BanditTasks(self.probs.to(device), self.luck.to(device), self.seeds)

    @staticmethod
    def cat(batches: list["BanditTasks"]) -> "BanditTasks":
        return BanditTasks(*(torch.cat(parts) for parts in zip(*((b.probs, b.luck, b.seeds) for b in batches))))

    def pull(self, t: int, arms: torch.Tensor) -> torch.Tensor:
        """Rewards (0. or 1.) [T] of pulling ``arms`` [T] at pull ``t``."""
        luck = self.luck[:, t].gather(1, arms.unsqueeze(1)).squeeze(1)
        chance = self.probs.gather(1, arms.unsqueeze(1)).squeeze(1)
        return (luck < chance).float()

    def optimal_return(self) -> torch.Tensor:
        """Expected total reward [T] of always pulling the best arm (what regret is measured from)."""
        return self.horizon * self.probs.max(dim=-1).values


class BanditSource(EpisodeSource):
    metric = "return"
    kind = "bandit"

    def __init__(self, arms: int, horizon: int, device="cpu"):
        self.arms, self.horizon, self.device = arms, horizon, device
        self.image_shape = (arms,)  # what the learner is built for: the number of arms

    def to(self, device) -> "BanditSource":
        self.device = device
        return self

    def sample(self, generator: torch.Generator, n_tasks: int) -> BanditTasks:
        probs = torch.rand(n_tasks, self.arms, generator=generator)
        luck = torch.rand(n_tasks, self.horizon, self.arms, generator=generator)
        seeds = torch.randint(0, 2**62, (n_tasks,), generator=generator)
        return BanditTasks(probs, luck, seeds).to(self.device)
