"""metarun's meta-RL task families as Gymnasium environments, registered under ``metarun/`` ids.

A task family is a ``gymnasium.Env`` with two more methods, which is all ``data=gym`` needs of an
environment (a user's own family included):

    sample_tasks(n, rng) -> list      n task descriptions, drawn with the numpy Generator ``rng``
    set_task(task)                    the task that the following episodes (``reset``) play

Registered here (``gymnasium.make`` finds them once ``metarun.rl.gym_families`` is imported):

- ``metarun/Navigation2D-v0``: the 2D navigation of Finn et al. 2017 (Sec. 5.3), the same
  dynamics and reward as ``data=navigation2d`` (``metarun/data/navigation2d.py``), one episode at
  a time.
- ``metarun/HalfCheetahVel-v0`` and ``metarun/HalfCheetahDir-v0``: the MAML paper's locomotion
  families on Gymnasium's MuJoCo HalfCheetah (v5, the ``mujoco`` package): a goal velocity drawn
  uniformly from [0, 2], reward -|forward velocity - goal| - 0.05 |a|^2; or a direction,
  forward or backward, reward direction x forward velocity - 0.05 |a|^2 (the control cost of the
  authors' environments, 0.5 x 0.1). Horizon 200, as in the paper. The forward velocity is
  Gymnasium's (the root's x displacement over a step), where the authors' rllab environments read
  the torso's centre-of-mass velocity.
"""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metarun.errors import MetarunError

GOAL_RANGE, MAX_ACTION, GOAL_TOLERANCE = (-0.5, 0.5), 0.1, 0.01
CONTROL_COST = 0.05


class Navigation2DEnv(gym.Env):
    """A point moves from the origin by velocity actions (clipped to [-0.1, 0.1]) towards the
    task's goal; reward -distance; the episode ends within 0.01 of the goal (each coordinate)."""

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        self.goal = np.zeros(2, dtype=np.float32)
        self.position = np.zeros(2, dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        return list(rng.uniform(*GOAL_RANGE, size=(n, 2)).astype(np.float32))

    def set_task(self, task) -> None:
        self.goal = np.asarray(task, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = np.zeros(2, dtype=np.float32)
        return self.position.copy(), {}

    def step(self, action):
        self.position = self.position + np.clip(action, -MAX_ACTION, MAX_ACTION).astype(np.float32)
        offset = self.position - self.goal
        reached = bool((np.abs(offset) < GOAL_TOLERANCE).all())
        return self.position.copy(), -float(np.sqrt((offset ** 2).sum())), reached, False, {}


@functools.cache
def half_cheetah_families() -> dict[str, type]:
    """The HalfCheetah families' classes, built on first use: Gymnasium's MuJoCo environments
    import ``mujoco``, which ``data=gym`` needs only for these."""
    try:
        from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    except ImportError as error:  # gymnasium raises DependencyNotInstalled, an ImportError
        raise MetarunError(f"the HalfCheetah task families need MuJoCo ({error}): pip install 'metarun[rl]'") from None

    class HalfCheetahFamily(HalfCheetahEnv):
        """HalfCheetah-v5 with the control cost of the MAML paper's environments, and a task
        that replaces the forward reward (``task_reward``)."""

        def __init__(self, **options):
            super().__init__(ctrl_cost_weight=CONTROL_COST, **options)
            self.task = self.sample_tasks(1, np.random.default_rng(0))[0]

        def set_task(self, task) -> None:
            self.task = float(task)

        def step(self, action):
            observation, _, terminated, truncated, info = super().step(action)
            reward = self.task_reward(info["x_velocity"]) + info["reward_ctrl"]
            return observation, reward, terminated, truncated, info

    class HalfCheetahVelocity(HalfCheetahFamily):
        def sample_tasks(self, n: int, rng: np.random.Generator) -> list[float]:
            return list(rng.uniform(0.0, 2.0, size=n))

        def task_reward(self, velocity: float) -> float:
            return -abs(velocity - self.task)

    class HalfCheetahDirection(HalfCheetahFamily):
        def sample_tasks(self, n: int, rng: np.random.Generator) -> list[float]:
            return list(rng.choice([-1.0, 1.0], size=n))

        def task_reward(self, velocity: float) -> float:
            return self.task * velocity

    return {"velocity": HalfCheetahVelocity, "direction": HalfCheetahDirection}


def half_cheetah_velocity(**options) -> gym.Env:
    return half_cheetah_families()["velocity"](**options)


def half_cheetah_direction(**options) -> gym.Env:
    return half_cheetah_families()["direction"](**options)


FAMILIES = {
    "metarun/Navigation2D-v0": ("metarun.rl.gym_families:Navigation2DEnv", 100),
    "metarun/HalfCheetahVel-v0": ("metarun.rl.gym_families:half_cheetah_velocity", 200),
    "metarun/HalfCheetahDir-v0": ("metarun.rl.gym_families:half_cheetah_direction", 200),
}
for env_id, (entry_point, horizon) in FAMILIES.items():
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=horizon)
