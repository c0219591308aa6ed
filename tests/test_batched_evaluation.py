"""Metric learners embed many test episodes in one backbone pass: the scores are those of one
episode at a time, and training still goes episode by episode."""
from __future__ import annotations

import pytest
import torch

from metarun.algorithms import build_learner
from metarun.data import build_sources
from metarun.engine.evaluate import groups_of_tasks, score_tasks


@pytest.mark.parametrize("algo", ["protonet", "matchingnet", "relationnet", "baselinepp", "feat"])
def test_many_episodes_in_one_pass_score_as_one_at_a_time(make_cfg, algo):
    torch.manual_seed(0)
    cfg = make_cfg(f"algo={algo}", "data.queries=3")
    sources = build_sources(cfg.data, cfg.paths)
    learner = build_learner(cfg, "image", sources["train"].image_shape, sources["train"].n_classes)
    batch = sources["train"].sample(torch.Generator().manual_seed(0), 4, 5, 1, 3)
    learner.train()
    learner.meta_train_step(batch)  # batch norm's running statistics move away from their start
    episodes = list(sources["test"].fixed_episodes(12, 0, "test", 5, 1, 3))

    learner.eval()
    with torch.no_grad():
        together = learner.predict_many(episodes)
        alone = [learner.adapt_and_predict(task) for task in episodes]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    one_by_one = score_tasks(learner, episodes, 12, "accuracy", "cpu", progress=False, values_per_pass=0)
    grouped = score_tasks(learner, episodes, 12, "accuracy", "cpu", progress=False, values_per_pass=5 * 20 * 784)
    assert one_by_one.tolist() == grouped.tolist()
    assert 0 < one_by_one.mean() < 1


def test_tasks_are_grouped_in_order_up_to_the_budget(make_cfg):
    cfg = make_cfg("algo=protonet")
    source = build_sources(cfg.data, cfg.paths)["test"]
    episodes = list(source.fixed_episodes(7, 0, "test", 5, 1, 3))  # 20 images of 784 values each
    groups = list(groups_of_tasks(episodes, 3 * 20 * 784))
    assert [len(g) for g in groups] == [3, 3, 1]
    assert [t for g in groups for t in g] == episodes
    assert [len(g) for g in groups_of_tasks(episodes, 100)] == [1] * 7  # a task at least
    assert [len(g) for g in groups_of_tasks(episodes, 0)] == [1] * 7
