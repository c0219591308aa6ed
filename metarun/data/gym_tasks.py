"""``data=gym``: any Gymnasium environment that is a task family (``sample_tasks(n, rng)`` and
``set_task(task)``, see ``metarun/rl/gym_families.py``) as a meta-RL task source.

A batch of T tasks is rolled out N trajectories at a time on T x N copies of the environment (kept
between rollouts, so MuJoCo models are built once), stepped one by one on the host. The policy acts
in normalised units: each action coordinate is clipped to [-1, 1] and mapped onto the action box,
as for ``data=navigation2d``. Every episode is reset with a seed derived from its task's seed, so a
test task plays the same start states for every learner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

import metarun.rl.gym_families  # noqa: F401  (registers the metarun/ task families)
from metarun.data.episodes import EpisodeSource
from metarun.errors import ConfigError, MetarunError

TASK_METHODS = ("sample_tasks", "set_task")


def make_env(env_id: str, env_kwargs: dict) -> gym.Env:
    """``gymnasium.make(env_id)``, with a one-line error for an id Gymnasium does not know (a
    ``module:EnvId`` id imports ``module`` first, which is how a user's own family registers)."""
    try:
        return gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        known = ", ".join(sorted(i for i in gym.registry if i.startswith("metarun/")))
        raise ConfigError("data.env_id", env_id, f"a registered Gymnasium id ({error}; metarun's: {known}; "
                          "your own: 'your_module:YourEnv-v0', with your_module registering it)") from None
    except ModuleNotFoundError as error:
        raise ConfigError("data.env_id", env_id, f"an id whose module imports ({error})") from None


def check_task_family(env: gym.Env, env_id: str) -> None:
    """A clear error for an environment that metarun's policy-gradient learners cannot meta-train on."""
    missing = [m for m in TASK_METHODS if not callable(getattr(env.unwrapped, m, None))]
    if missing:
        raise ConfigError("data.env_id", env_id, "an environment that is a task family: it lacks "
                          f"{' and '.join(missing)} (sample_tasks(n, rng) -> list of tasks; "
                          "set_task(task); docs/meta-rl.md)")
    if not isinstance(env.action_space, spaces.Box) or not np.isfinite(env.action_space.low).all() \
            or not np.isfinite(env.action_space.high).all():
        raise ConfigError("data.env_id", env_id, f"an environment with a bounded Box action space (the "
                          f"Gaussian policies' actions); its action space is {env.action_space}")
    if not isinstance(env.observation_space, spaces.Box) or len(env.observation_space.shape) != 1:
        raise ConfigError("data.env_id", env_id, "an environment whose observations are vectors (a Box of "
                          f"one dimension); its observation space is {env.observation_space}")


@dataclass
class GymTasks:
    """A batch of tasks of one Gymnasium family: the tasks' descriptions and ``seeds`` [T], which
    seed the acting policy's noise and the episodes' start states."""

    tasks: list
    seeds: torch.Tensor
    source: "GymTaskSource"

    def __len__(self) -> int:
        return len(self.tasks)

    def select(self, which: slice) -> "GymTasks":
        return GymTasks(self.tasks[which], self.seeds[which], self.source)

    def __getitem__(self, i: int) -> "GymTasks":
        return self.select(slice(i, i + 1))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device) -> "GymTasks":
        return self  # the environments run on the host; observations are moved by the learner

    @staticmethod
    def cat(batches: list["GymTasks"]) -> "GymTasks":
        return GymTasks([t for b in batches for t in b.tasks], torch.cat([b.seeds for b in batches]),
                        batches[0].source)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def horizon(self) -> int:
        return self.source.horizon

    def simulate(self, n_trajectories: int) -> "GymEpisodes":
        return GymEpisodes(self, n_trajectories)


class GymEpisodes:
    """``n_trajectories`` episodes of each task, stepped together (see ``NavigationEpisodes``)."""

    def __init__(self, tasks: GymTasks, n_trajectories: int):
        self.tasks, self.n = tasks, n_trajectories
        self.envs = tasks.source.envs(len(tasks) * n_trajectories)
        space = tasks.source.action_space
        self.low, self.high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        self.done = torch.zeros(len(tasks), n_trajectories, dtype=torch.bool)
        self.last: torch.Tensor | None = None
        self.t = 0

    def reset(self) -> torch.Tensor:
        observations = []
        for i, env in enumerate(self.envs):
            task, trajectory = divmod(i, self.n)
            env.unwrapped.set_task(self.tasks.tasks[task])
            seed = (int(self.tasks.seeds[task]) + 7919 * trajectory) % 2**63
            observations.append(env.reset(seed=seed)[0])
        self.last = self.as_tensor(observations)
        return self.last

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scaled = self.low + (actions.detach().cpu().clamp(-1, 1) + 1) / 2 * (self.high - self.low)
        scaled = scaled.reshape(len(self.envs), -1).numpy()
        observations = self.last.reshape(len(self.envs), -1).numpy().copy()
        rewards = np.zeros(len(self.envs), dtype=np.float32)
        done = self.done.reshape(-1).numpy().copy()
        for i, env in enumerate(self.envs):
            if done[i]:
                continue
            observations[i], rewards[i], terminated, truncated, _ = env.step(scaled[i])
            if not math.isfinite(rewards[i]):
                task = self.tasks.tasks[i // self.n]
                raise MetarunError(f"data.env_id={self.tasks.source.env_id}: the reward at step {self.t + 1} is "
                                   f"{rewards[i]} (task {task}); the environment must pay finite rewards")
            done[i] = terminated or truncated
        shape = self.done.shape
        self.done, self.t = torch.from_numpy(done).reshape(shape), self.t + 1
        self.last = torch.from_numpy(observations).reshape(*shape, -1)
        return self.last, torch.from_numpy(rewards).reshape(shape), self.done

    def as_tensor(self, observations: list) -> torch.Tensor:
        return torch.as_tensor(np.asarray(observations, dtype=np.float32)).reshape(len(self.tasks), self.n, -1)


class GymTaskSource(EpisodeSource):
    metric = "return"
    kind = "gym"

    def __init__(self, env_id: str, env_kwargs: dict, horizon: int | None):
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        probe = make_env(env_id, self.env_kwargs)
        check_task_family(probe, env_id)
        limit = probe.spec.max_episode_steps if probe.spec is not None else None
        if horizon is None and limit is None:
            raise ConfigError("data.horizon", None, f"a positive integer: {env_id} sets no max_episode_steps, "
                              "so its episodes might never end")
        self.horizon = horizon or limit
        self.image_shape = probe.observation_space.shape  # what the policy network reads
        self.action_space = probe.action_space
        self.action_size = int(np.prod(probe.action_space.shape))
        self.task_sampler = probe
        self._envs = [probe]

    def envs(self, n: int) -> list[gym.Env]:
        """``n`` copies of the environment; all but the first without Gymnasium's checker of the
        environment's API (the first, which ``check_task_family`` saw, keeps it)."""
        while len(self._envs) < n:
            self._envs.append(make_env(self.env_id, {"disable_env_checker": True, **self.env_kwargs}))
        return self._envs[:n]

    def to(self, device) -> "GymTaskSource":
        return self

    def sample(self, generator: torch.Generator, n_tasks: int) -> GymTasks:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        tasks = list(self.task_sampler.unwrapped.sample_tasks(n_tasks, rng))
        if len(tasks) != n_tasks:
            raise MetarunError(f"data.env_id={self.env_id}: sample_tasks({n_tasks}, rng) returned {len(tasks)} tasks")
        seeds = torch.randint(0, 2**62, (n_tasks,), generator=generator)
        return GymTasks(tasks, seeds, self)
