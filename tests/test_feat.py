"""FEAT: the set function adapts the prototypes as a set, and the regulariser is the paper's."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from metarun.algorithms.feat import FEAT
from metarun.backbones.conv4 import Conv4
from metarun.tasks import Task

CFG = dict(distance="euclidean", temperature=64.0, temperature2=16.0, balance=1.0, dropout=0.5)


def feat_and_task(ways: int = 4, shots: int = 2, queries: int = 3) -> tuple[FEAT, Task]:
    torch.manual_seed(0)
    learner = FEAT(Conv4(1, 8, 3, 3, 12, channels_last=False, fold_first_batch_norm=True), OmegaConf.create(CFG)).eval()
    task = Task(torch.rand(ways * shots, 1, 12, 12), torch.arange(ways).repeat_interleave(shots),
                torch.rand(ways * queries, 1, 12, 12), torch.arange(ways).repeat(queries))
    return learner, task


def test_the_adapted_prototypes_follow_the_classes_not_their_order():
    """T is applied to the prototypes as a set: relabelling the support classes permutes the
    logits' columns and changes nothing else."""
    learner, task = feat_and_task()
    order = torch.tensor([2, 0, 3, 1])  # class k becomes class order[k]
    relabelled = Task(task.support_x, order[task.support_y], task.query_x, order[task.query_y])
    with torch.no_grad():
        torch.testing.assert_close(learner.adapt_and_predict(relabelled)[:, order], learner.adapt_and_predict(task))
        support, query = learner.episode_features(task)
        adapted = learner.adapted_prototypes(support, task.support_y)
        means = torch.stack([support[task.support_y == k].mean(0) for k in range(4)])
        assert not torch.allclose(adapted, means)  # T moved them


def test_regulariser_classifies_each_embedding_against_its_adapted_class_sets():
    """Written out class by class: each class's support and query embeddings go through T as one
    set, its centre is their mean, and every unadapted embedding of the episode is scored
    against every centre (-squared distance / temperature2)."""
    learner, task = feat_and_task()
    with torch.no_grad():
        support, query = learner.episode_features(task)
        logits, labels = learner.regulariser_logits(task, support, query)
        embeddings, all_labels = torch.cat([support, query]), torch.cat([task.support_y, task.query_y])
        centres = torch.stack([learner.set_function(embeddings[all_labels == k].unsqueeze(0))[0].mean(0)
                               for k in range(4)])
        expected = -torch.cdist(embeddings, centres) ** 2 / 16.0
    torch.testing.assert_close(labels, all_labels)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_training_adds_the_regulariser_to_the_query_loss():
    from metarun.tasks import TaskBatch
    learner, task = feat_and_task()
    batch = TaskBatch(*(t.unsqueeze(0) for t in (task.support_x, task.support_y, task.query_x, task.query_y)))
    learner.train()
    gradients = {}
    for balance in (0.0, 1.0):
        learner.balance = balance
        learner.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        learner.meta_train_step(batch)
        gradients[balance] = learner.set_function.query.weight.grad.clone()
    assert not torch.allclose(gradients[0.0], gradients[1.0])
