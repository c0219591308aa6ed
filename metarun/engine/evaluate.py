"""Scoring a learner on a fixed list of episodes."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from metarun.algorithms import MetaLearner
from metarun.data import EpisodeSource
from metarun.tasks import Task


def episode_score(metric: str, prediction: torch.Tensor, target: torch.Tensor) -> float:
    if metric == "mse":
        return float(torch.mean((prediction - target) ** 2))
    return float((prediction.argmax(-1) == target).float().mean())


def evaluate(learner: MetaLearner, source: EpisodeSource, n_episodes: int, seed: int, split: str,
             shape: tuple[int, ...], device, desc: str = "", progress: bool = True) -> np.ndarray:
    """One score per episode (accuracy or MSE; for meta-RL a row of returns, see ``score_tasks``)
    on the ``n_episodes`` fixed episodes of ``seed`` and ``split``; ``shape`` is (ways, shots,
    queries), or empty for meta-RL tasks."""
    episodes = source.fixed_episodes(n_episodes, seed, split, *shape)
    return score_tasks(learner, episodes, n_episodes, source.metric, device, desc, progress)


def score_tasks(learner: MetaLearner, tasks: Iterable[Task], n_tasks: int, metric: str, device,
                desc: str = "", progress: bool = True) -> np.ndarray:
    """One score per task; for meta-RL (``metric == "return"``) one row per task, the returns
    after each adaptation stage (``primary`` picks the last, the result). The learner is put in
    eval mode (batch norm uses running statistics where the learner keeps them) and restored
    to its previous mode afterwards."""
    was_training = learner.training
    learner.eval()
    scores = []
    with torch.no_grad():
        for task in tqdm(tasks, total=n_tasks, desc=desc, leave=False, disable=not progress):
            task = task.to(device)
            if metric == "return":
                scores.append(learner.trial_returns(task).cpu().numpy())
            else:
                scores.append(episode_score(metric, learner.adapt_and_predict(task), task.query_y))
    learner.train(was_training)
    return np.asarray(scores)
