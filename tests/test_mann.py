"""MANN (Santoro et al. 2016): the least-recently-used memory access rules, per-query
predictions, the start checks, and that the memory learns to bind examples to labels."""
from __future__ import annotations

import pytest
import torch

from conftest import parameters_batch_norm_leaves_free
from mann_synthetic_check import build_mann, gaussian_class_tasks, held_out_accuracy, train
from metarun.algorithms import build_learner
from metarun.algorithms.mann import LRUAMemory
from metarun.config_check import validate_config
from metarun.data import build_sources
from metarun.errors import ConfigError


def memory_with_keys(keys: torch.Tensor, slots: int, decay: float = 0.95) -> LRUAMemory:
    """A memory whose every step writes ``keys`` (heads x slot size), with a closed write gate:
    sigmoid(-30) ~ 1e-13, so the writes go to the least-used slots alone."""
    heads, slot_size = keys.shape
    memory = LRUAMemory(hidden=1, slots=slots, slot_size=slot_size, heads=heads, usage_decay=decay,
                        key_strength=False)
    with torch.no_grad():
        memory.key.weight.zero_()
        memory.key.bias.copy_(torch.atanh(keys).flatten())
        memory.write_gate.fill_(-30.0)
    return memory


def test_least_used_gives_head_j_the_jth_least_used_slot():
    memory = memory_with_keys(torch.full((2, 3), 0.5), slots=4)
    usage = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    # ties go to the lower index: slots 1 and 3 are the two least used, in that order
    assert torch.equal(memory.least_used(usage), torch.tensor([[[0., 1, 0, 0], [0, 0, 0, 1]]]))


def test_a_write_empties_the_least_used_slot_and_heads_write_distinct_slots():
    keys = torch.tensor([[0.5, -0.25, 0.1], [-0.3, 0.2, 0.4]])
    memory = memory_with_keys(keys, slots=4)
    state = memory.initial_state(1, torch.device("cpu"), torch.float32)
    old = torch.arange(12.0).view(1, 4, 3) / 10
    usage = torch.tensor([[0.5, 0.1, 0.3, 0.2]])
    state.update(memory=old, usage=usage, least_used=memory.least_used(usage))
    new = memory(torch.zeros(1, 1), state)
    expected = old.clone()
    expected[0, 1] = keys[0]           # the least-used slot: emptied, then head 0's key
    expected[0, 3] = old[0, 3] + keys[1]  # the second least used: head 1 adds its key
    torch.testing.assert_close(new["memory"], expected)
    # usage: decayed, plus each head's read and write weights
    write = torch.tensor([[[0., 1, 0, 0], [0, 0, 0, 1]]])
    torch.testing.assert_close(new["usage"], 0.95 * usage + (new["read_weights"] + write).sum(dim=1))
    torch.testing.assert_close(new["read_weights"].sum(-1), torch.ones(1, 2))


def test_an_empty_memory_fills_in_order_before_any_slot_is_reused():
    memory = memory_with_keys(torch.tensor([[0.5, -0.5], [0.25, 0.75]]), slots=6)
    state = memory.initial_state(1, torch.device("cpu"), torch.float32)
    for step in range(3):
        written = [int(s) for s in state["least_used"][0].argmax(-1)]
        assert written == [2 * step, 2 * step + 1]
        state = memory(torch.zeros(1, 1), state)
    assert bool((state["memory"].abs().sum(-1) > 0).all())  # all six slots hold a key


def test_mann_meta_gradient_reaches_every_parameter(make_cfg):
    cfg = make_cfg("algo=mann", "backbone.channels=8")
    learner = build_learner(cfg, "image", (1, 28, 28), None)
    batch = build_sources(cfg.data, cfg.paths)["train"].sample(torch.Generator().manual_seed(0), 2, 5, 1, 2)
    metrics = learner.meta_train_step(batch)
    assert 0 <= metrics["acc"] <= 1
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in parameters_batch_norm_leaves_free(learner))


def test_mann_learns_to_bind_labels_in_memory():
    """5-way 1-shot tasks with fresh Gaussian class prototypes each time (perfect features, so
    what must be learned is the memory's binding of examples to late labels). A small MANN
    (64 LSTM units, 16 slots of 16, one head; Adam 1e-2) reaches 68-70% on held-out tasks after
    1,000 updates of 16 tasks in two seeds; it sits near chance for the first few hundred."""
    torch.manual_seed(0)
    learner = build_mann(32, 5, ["hidden=64", "slots=16", "slot_size=16", "read_heads=1"])
    shape = dict(ways=5, shots=1, queries=3, dim=32, noise=0.3)
    held_out = gaussian_class_tasks(torch.Generator().manual_seed(1), 300, **shape)
    assert held_out_accuracy(learner, held_out) < 0.3
    train(learner, steps=1000, lr=1e-2, task_shape={"n_tasks": 16, **shape}, seed=0)
    assert held_out_accuracy(learner, held_out) >= 0.5


@pytest.mark.parametrize("override, key", [
    ("algo.read_heads=200", "algo.read_heads"),
    ("algo.usage_decay=1.5", "algo.usage_decay"),
    ("algo.slots=0", "algo.slots"),
    ("algo.episode.ways=20", "algo.episode.ways"),
    ("algo.normalize_embedding=yes", "algo.normalize_embedding"),
])
def test_mann_bad_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg("algo=mann", override))
    assert error.value.key == key
