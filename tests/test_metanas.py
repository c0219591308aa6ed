"""MetaNAS: the meta-architecture moves to the operation a task family needs, genotypes are
DARTS's parse, tests prune, and a search writes what a user reads and can train again."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from metarun.algorithms.metanas import MetaNAS
from metarun.backbones.darts_cells import CellNetwork, all_edges, parse_genotype
from metarun.cli import run
from metarun.config_check import validate_config
from metarun.errors import ConfigError
from metarun.tasks import TaskBatch

# operations that cannot tell a horizontal stripe pattern from its transpose (they commute with
# transposing the image, as global pooling does), and one that can
SYMMETRIC, ORIENTED = ("skip_connect", "avg_pool_3x3", "max_pool_3x3"), "conv_3x3"


def stripes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy 8x8 images of horizontal stripes (label 0) and n of vertical ones (1), random phase."""
    phase = torch.randint(0, 2, (2 * n, 1, 1), generator=generator)
    pattern = ((torch.arange(8).view(8, 1) + phase) % 2 * 2.0 - 1).expand(2 * n, 8, 8)
    x = torch.cat([pattern[:n], pattern[n:].transpose(1, 2)]).unsqueeze(1)
    return x + 0.5 * torch.randn(2 * n, 1, 8, 8, generator=generator), torch.arange(2).repeat_interleave(n)


def stripe_tasks(tasks: int, shots: int, queries: int, generator: torch.Generator) -> TaskBatch:
    """2-way tasks: which orientation is class 0 is drawn per task."""
    drawn = []
    for _ in range(tasks):
        flip = int(torch.randint(0, 2, (1,), generator=generator))
        (sx, sy), (qx, qy) = stripes(shots, generator), stripes(queries, generator)
        drawn.append((sx, (sy + flip) % 2, qx, (qy + flip) % 2))
    return TaskBatch(*(torch.stack([task[i] for task in drawn]) for i in range(4)))


def test_the_meta_architecture_moves_to_the_operation_that_solves_the_task_family():
    """On stripe-orientation tasks, with a pointwise stem, only conv_3x3 sees orientation: after
    40 meta-updates both edges of the one-node cell weigh it most, and held-out tasks are solved."""
    cfg = OmegaConf.create(dict(inner_lr=0.05, architecture_lr=0.05, inner_steps=5, inner_batch=10,
                                eval_inner_steps=20, eval_inner_batch=10, architecture_meta_lr=0.6,
                                temperature={"start": 1.0, "end": 0.05}, warm_up_fraction=0.0,
                                prune_threshold=0.01, transductive_bn=True, optimizer={"lr": 1.0}))
    torch.manual_seed(0)
    network = CellNetwork(1, 4, 2, [], 1, 1, primitives=(*SYMMETRIC, ORIENTED))
    network.stem[0] = nn.Conv2d(1, 4, 1, bias=False)  # a pointwise stem: the cells must find orientation
    learner = MetaNAS(network, 2, cfg, OmegaConf.create({"max_steps": 40}))
    optimizer = torch.optim.SGD(learner.parameters(), lr=1.0)
    generator = torch.Generator().manual_seed(1)
    before = torch.softmax(network.alpha_normal.detach(), -1).clone()
    for _ in range(40):
        optimizer.zero_grad()
        learner.meta_train_step(stripe_tasks(4, 5, 5, generator))
        optimizer.step()
    after = torch.softmax(network.alpha_normal.detach(), -1)
    oriented = network.primitives.index(ORIENTED)
    assert (after.argmax(-1) == oriented).all(), after
    assert (after[:, oriented] > before[:, oriented] + 0.05).all(), (before, after)
    learner.eval()
    held_out = stripe_tasks(20, 5, 10, torch.Generator().manual_seed(5))
    accuracy = sum(float((learner.adapt_and_predict(task).argmax(-1) == task.query_y).float().mean())
                   for task in held_out) / 20
    assert accuracy >= 0.9, accuracy


def test_genotype_keeps_each_nodes_two_strongest_inputs_with_their_best_operation():
    primitives = ("max_pool_3x3", "skip_connect", "conv_3x3")
    weights = torch.full((len(all_edges(2)), 3), 0.1)
    rows = {edge: i for i, edge in enumerate(all_edges(2))}
    weights[rows[(0, 0)], 2], weights[rows[(0, 1)], 0] = 0.8, 0.5
    weights[rows[(1, 0)], 1], weights[rows[(1, 1)], 2], weights[rows[(1, 2)], 2] = 0.3, 0.2, 0.9
    assert parse_genotype(weights, 2, primitives) == [[["conv_3x3", 0], ["max_pool_3x3", 1]],
                                                      [["skip_connect", 0], ["conv_3x3", 2]]]


def test_test_tasks_prune_operations_below_the_threshold():
    torch.manual_seed(0)
    network = CellNetwork(1, 4, 1, [], 1, 1)
    alpha = torch.zeros_like(network.alpha_normal)
    alpha[0, 0] = 10.0  # edge 0: one operation dominates
    mask = torch.softmax(alpha, -1) < 0.01
    network.masks = {"normal": mask, "reduce": torch.zeros_like(mask)}
    weights = network.operation_weights(alpha, "normal")
    assert torch.equal(weights[0], torch.eye(len(network.primitives))[0])  # the others pruned: exactly 0
    torch.testing.assert_close(weights[1], torch.full((len(network.primitives),), 1 / len(network.primitives)))


def test_a_search_writes_its_genotype_and_picture_and_the_genotype_trains_as_a_backbone(make_cfg, tmp_path):
    search = ("algo=metanas", "algo.search_space.channels=4", "algo.search_space.layers=2",
              "algo.search_space.reduction_layers=[1]", "algo.search_space.nodes=2", "algo.meta_batch=2",
              "algo.eval_inner_steps=2", "trainer.max_steps=4", "trainer.log_every=2", "trainer.val_every=0",
              "eval.episodes=2")
    results = run(make_cfg(*search), tmp_path / "search")
    assert results["algo"] == "metanas"
    genotype_file = tmp_path / "search" / "checkpoints" / "genotype.json"
    genotype = json.loads(genotype_file.read_text())
    assert genotype["nodes"] == 2 and len(genotype["normal"]) == len(genotype["reduce"]) == 2
    assert all(len(pairs) == 2 for pairs in genotype["normal"] + genotype["reduce"])
    history = [json.loads(line) for line in (tmp_path / "search" / "genotypes.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 4 and history[-1]["normal"] == genotype["normal"]
    assert (tmp_path / "search" / "cells.png").read_bytes()[:4] == b"\x89PNG"
    logged = [json.loads(line) for line in (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()]
    assert any("arch/normal/node0_from0/conv_3x3" in record for record in logged)

    fixed = run(make_cfg("algo=protonet", "backbone=genotype", f"backbone.genotype={genotype_file}",
                         "backbone.channels=4", "backbone.layers=2", "backbone.reduction_layers=[1]",
                         "trainer.max_steps=2", "trainer.val_every=0", "eval.episodes=2"), tmp_path / "fixed")
    assert fixed["algo"] == "protonet" and fixed["params"] < results["params"]


def test_a_random_genotype_is_a_valid_cell_pair_of_the_space(tmp_path):
    from metarun.backbones.darts_cells import PRIMITIVES, random_genotype, read_genotype
    path = tmp_path / "random.json"
    path.write_text(json.dumps(random_genotype(3, seed=4)))
    genotype = read_genotype(path)
    for cell in ("normal", "reduce"):
        assert [len(pairs) for pairs in genotype[cell]] == [2, 2, 2]
        for node, pairs in enumerate(genotype[cell]):
            sources = [source for _, source in pairs]
            assert len(set(sources)) == 2 and all(0 <= s < 2 + node for s in sources)
            assert all(name in PRIMITIVES for name, _ in pairs)
    assert random_genotype(3, seed=4) == random_genotype(3, seed=4) != random_genotype(3, seed=5)
    network = CellNetwork(1, 4, 2, [1], 3, 1, genotype=genotype)
    assert network(torch.rand(2, 1, 12, 12)).shape == (2, network.out_features)


def test_a_random_genotype_backbone_draws_the_cell_of_its_seed(make_cfg, tmp_path):
    """backbone.genotype=random builds the cell scripts/random_genotype.py writes for the run's
    seed, a new one for another seed; a misspelt file is a one-line error naming the key."""
    from metarun.backbones import genotype_of
    from metarun.backbones.darts_cells import random_genotype
    cells = ["backbone=genotype", "backbone.genotype=random", "backbone.channels=4"]
    assert genotype_of(make_cfg(*cells, "seed=1").backbone) == random_genotype(3, seed=1)
    assert genotype_of(make_cfg(*cells, "seed=2").backbone) == random_genotype(3, seed=2) != random_genotype(3, seed=1)
    assert genotype_of(make_cfg(*cells, "seed=2", "backbone.random_seed=1").backbone) == random_genotype(3, seed=1)
    with pytest.raises(ConfigError, match="backbone.random_seed"):
        validate_config(make_cfg(*cells, "backbone.random_seed=null"))
    with pytest.raises(ConfigError, match="backbone.genotype.*an existing file"):
        genotype_of(make_cfg("backbone=genotype", f"backbone.genotype={tmp_path / 'missing.json'}").backbone)

