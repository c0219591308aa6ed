"""Test time of a metric learner: its fixed test episodes one at a time against many in one pass.

    python scripts/bench_eval.py                          # ProtoNet, 1,000 Omniglot 5-way 1-shot episodes
    python scripts/bench_eval.py algo=matchingnet data.ways=20 --episodes 500

Builds the learner of the given overrides (untrained: the time does not depend on the weights),
checks that both ways give the same scores, then times each twice, alternating, and prints the
seconds and episodes per second of the faster attempt of each, and the ratio.
"""
from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_module

from metarun.algorithms import build_learner
from metarun.data import build_sources
from metarun.engine.evaluate import VALUES_PER_PASS, score_tasks
from metarun.engine.host_memory import cache_host_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=[])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--values", type=int, default=VALUES_PER_PASS, help="input values a pass")
    args = parser.parse_args()
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["algo=protonet", "data=omniglot", *args.overrides])
    cache_host_memory(cfg.device.cache_host_memory)  # as metarun runs: large tensors from the heap
    torch.manual_seed(0)
    sources = build_sources(cfg.data, cfg.paths)
    test, train = sources["test"], sources["train"]
    learner = build_learner(cfg, train.kind, train.image_shape, train.n_classes)
    shape = (cfg.data.ways, cfg.data.shots, cfg.data.queries)
    episodes = list(test.fixed_episodes(args.episodes, cfg.eval.seed, "test", *shape))

    def timed(values_per_pass: int):
        start = time.perf_counter()
        scores = score_tasks(learner, episodes, len(episodes), test.metric, "cpu", progress=False,
                             values_per_pass=values_per_pass)
        return time.perf_counter() - start, scores

    results = {0: [], args.values: []}
    for _ in range(2):
        for values in results:
            results[values].append(timed(values))
    one, many = (min(results[v], key=lambda r: r[0]) for v in (0, args.values))
    assert one[1].tolist() == many[1].tolist(), "the two ways scored the episodes differently"
    print(f"{cfg.algo.name}, {args.episodes} episodes of {shape[0]}-way {shape[1]}-shot {shape[2]} queries, "
          f"{torch.get_num_threads()} threads (episodes drawn beforehand)")
    for label, (seconds, _) in (("one episode a pass", one), (f"{args.values:,} values a pass", many)):
        print(f"  {label:>24}: {seconds:6.2f} s, {len(episodes) / seconds:7.1f} episodes/s")
    print(f"  ratio: {one[0] / many[0]:.2f}x")


if __name__ == "__main__":
    main()
