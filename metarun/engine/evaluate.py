"""Scoring a learner on a fixed list of episodes."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from metarun.algorithms import MetaLearner
from metarun.data import EpisodeSource
from metarun.tasks import Task

# Test episodes of metric learners are embedded together up to this many input values a pass
# (PerImageFeatures): 1,300 Omniglot images of 28x28 (16 episodes of 5-way 1-shot 15 queries),
# whose first Conv4 activations take 260 MB; 40 mini-ImageNet images of 84x84x3.
VALUES_PER_PASS = 2 ** 20


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
                desc: str = "", progress: bool = True,
                values_per_pass: int = VALUES_PER_PASS) -> np.ndarray:
    """One score per task; for meta-RL (``metric == "return"``) one row per task, the returns
    after each adaptation stage (``primary`` picks the last, the result). The learner is put in
    eval mode (batch norm uses running statistics where the learner keeps them) and restored
    to its previous mode afterwards. Tasks go to ``learner.predict_many`` in groups of about
    ``values_per_pass`` input values (0: one by one); the scores are the same either way."""
    was_training = learner.training
    learner.eval()
    scores = []
    with torch.no_grad(), tqdm(total=n_tasks, desc=desc, leave=False, disable=not progress) as bar:
        for group in groups_of_tasks(tasks, values_per_pass if metric != "return" else 0):
            group = [task.to(device) for task in group]
            if metric == "return":
                scores += [learner.trial_returns(task).cpu().numpy() for task in group]
            else:
                predictions = learner.predict_many(group)
                scores += [episode_score(metric, p, task.query_y) for p, task in zip(predictions, group)]
            bar.update(len(group))
    learner.train(was_training)
    return np.asarray(scores)


def groups_of_tasks(tasks: Iterable[Task], values_per_pass: int) -> Iterator[list[Task]]:
    """Consecutive tasks whose images hold together at most ``values_per_pass`` values (a task at
    least), in their order."""
    group, values = [], 0
    for task in tasks:
        if values_per_pass == 0:
            yield [task]
            continue
        size = task.support_x.numel() + task.query_x.numel()
        if group and values + size > values_per_pass:
            yield group
            group, values = [], 0
        group.append(task)
        values += size
    if group:
        yield group
