"""data=gym: Gymnasium task families (metarun's own and a user's), the checks on what an
environment must offer, and that MAML-TRPO adapts through the Gymnasium interface."""
from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from metarun.cli import run
from metarun.data.gym_tasks import GymTaskSource
from metarun.data.navigation2d import NavigationSource
from metarun.engine.checkpoint import load_checkpoint
from metarun.errors import ConfigError, MetarunError
from metarun.rl.gym_families import Navigation2DEnv

GYM_NAV = ("algo=maml", "data=gym", "backbone=mlp", "data.env_id=metarun/Navigation2D-v0")


class NoTasks(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)


class DiscreteActions(Navigation2DEnv):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Discrete(4)


class NaNAfterAWhile(Navigation2DEnv):
    """Pays NaN once 2,000 steps have been taken in this process (a few training steps)."""
    steps = 0

    def step(self, action):
        NaNAfterAWhile.steps += 1
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, (float("nan") if NaNAfterAWhile.steps > 2_000 else reward), terminated, truncated, info


for env_id, entry_point, limit in (("metarun_test/NoTasks-v0", NoTasks, 10),
                                   ("metarun_test/Discrete-v0", DiscreteActions, 10),
                                   ("metarun_test/NaN-v0", NaNAfterAWhile, 10),
                                   ("metarun_test/Endless-v0", Navigation2DEnv, None)):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=limit)


def test_gymnasium_navigation_plays_as_the_tensor_navigation():
    """The same goals, start and actions give the same rewards and ends on
    metarun/Navigation2D-v0 as on data=navigation2d."""
    gym_tasks = GymTaskSource("metarun/Navigation2D-v0", {}, None).sample(torch.Generator().manual_seed(0), 3)
    goals = torch.as_tensor(np.array(gym_tasks.tasks))
    tensor_tasks = NavigationSource((-0.5, 0.5), 100, 0.1, "distance", 0.01).sample(torch.Generator(), 3)
    tensor_tasks.goals = goals
    a, b = gym_tasks.simulate(2), tensor_tasks.simulate(2)
    assert torch.equal(a.reset(), b.reset())
    actions = torch.Generator().manual_seed(1)
    for _ in range(12):
        step = torch.randn(3, 2, 2, generator=actions) * 0.8
        (oa, ra, da), (ob, rb, db) = a.step(step), b.step(step)
        assert torch.allclose(oa, ob, atol=1e-6) and torch.allclose(ra, rb, atol=1e-5) and torch.equal(da, db)


def test_half_cheetah_families_pay_the_maml_papers_rewards():
    pytest.importorskip("mujoco")
    for env_id, task, reward in (("metarun/HalfCheetahVel-v0", 1.5, lambda v: -abs(v - 1.5)),
                                 ("metarun/HalfCheetahDir-v0", -1.0, lambda v: -v)):
        env = gym.make(env_id)
        env.unwrapped.set_task(task)
        env.reset(seed=0)
        for _ in range(5):
            _, paid, _, _, info = env.step(env.action_space.sample())
            assert paid == pytest.approx(reward(info["x_velocity"]) + info["reward_ctrl"])
        assert env.spec.max_episode_steps == 200
    tasks = gym.make("metarun/HalfCheetahDir-v0").unwrapped.sample_tasks(100, np.random.default_rng(0))
    assert set(tasks) == {-1.0, 1.0}


def test_maml_trpo_adapts_on_a_gymnasium_task_family(make_cfg, tmp_path):
    """Meta-trained through the Gymnasium interface (10 MAML-TRPO iterations of 8 tasks on
    metarun/Navigation2D-v0, 30 steps an episode), one policy-gradient step on a held-out task
    raises the return (paired over 16 test tasks), and the policy beats random actions."""
    cfg = make_cfg(*GYM_NAV, "data.horizon=30", "algo.meta_batch=8", "algo.trajectories=8",
                   "trainer.max_steps=10", "trainer.val_every=0", "eval.episodes=16", "data.reference_trajectories=5")
    results = run(cfg, tmp_path)
    scores = np.load(tmp_path / "episode_scores.npy")  # [tasks, 0..3 steps]
    gain = scores[:, 1] - scores[:, 0]
    assert gain.mean() - 1.96 * gain.std(ddof=1) / np.sqrt(len(gain)) > 0, gain
    assert results["references"]["random"]["learner_minus_reference"]["mean"] > 1.5, results
    assert results["task_family"] == "metarun/Navigation2D-v0, horizon 30"
    assert (tmp_path / "return_after_steps.png").stat().st_size > 10_000  # the curve, as a picture


@pytest.mark.parametrize("env_id, key, words", [
    ("NoSuchEnv-v9", "data.env_id", "registered Gymnasium id"),
    ("metarun_test/NoTasks-v0", "data.env_id", "lacks sample_tasks and set_task"),
    ("metarun_test/Discrete-v0", "data.env_id", "bounded Box action space"),
    ("metarun_test/Endless-v0", "data.horizon", "might never end"),
])
def test_an_environment_metarun_cannot_use_is_named_with_the_reason(make_cfg, tmp_path, env_id, key, words):
    with pytest.raises(ConfigError) as error:
        run(make_cfg(*GYM_NAV, f"data.env_id={env_id}", "trainer.max_steps=1"), tmp_path)
    assert error.value.key == key and words in str(error.value)


def test_a_nan_reward_stops_the_run_with_its_checkpoint_intact(make_cfg, tmp_path):
    NaNAfterAWhile.steps = 0
    cfg = make_cfg(*GYM_NAV, "data.env_id=metarun_test/NaN-v0", "algo.meta_batch=4", "algo.trajectories=4",
                   "trainer.max_steps=50", "trainer.ckpt_every=1", "trainer.val_every=0")
    with pytest.raises(MetarunError, match=r"data.env_id=metarun_test/NaN-v0: the reward at step \d+ is nan"):
        run(cfg, tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert 1 <= saved["step"] < 50
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_the_docs_example_family_runs_from_its_own_module(make_cfg, tmp_path, monkeypatch):
    """The task family written out in docs/meta-rl.md, saved as my_tasks.py, meta-trains under
    data.env_id=my_tasks:WindyPoint-v0 (Gymnasium imports the module, which registers it)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "meta-rl.md").read_text()
    module = next(block for block in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "# my_tasks.py" in block)
    (tmp_path / "my_tasks.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = make_cfg("algo=maml", "data=gym", "backbone=mlp", "data.env_id=my_tasks:WindyPoint-v0",
                   "algo.meta_batch=2", "algo.trajectories=2", "trainer.max_steps=2", "trainer.val_every=0",
                   "eval.episodes=2")
    results = run(cfg, tmp_path / "run")
    assert results["task_family"] == "my_tasks:WindyPoint-v0" and len(results["return_after_steps"]) == 4
