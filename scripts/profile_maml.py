"""Where a second-order MAML meta-iteration spends its time on this machine, and how close its
convolutions run to the machine's arithmetic speed.

    python scripts/profile_maml.py                     # paper settings: 5-way 1-shot, 15 queries, meta-batch 32
    python scripts/profile_maml.py algo.task_batching=vmap --threads 1

Prints the operators by their own time, the floating-point work that the profiler counts
(convolutions and matrix products, forward and backward), and that work per second: the
fraction of a meta-iteration that is arithmetic-bound, and what is left for everything else.
"""
from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_module
from torch.profiler import ProfilerActivity, profile

from metarun.algorithms import build_learner
from metarun.data import build_sources
from metarun.engine.host_memory import cache_host_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. algo.meta_batch=16")
    parser.add_argument("--iterations", type=int, default=3, help="profiled meta-iterations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_host_memory(True)
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["algo=maml", "device=cpu", *args.overrides])
    train = build_sources(cfg.data, cfg.paths)["train"]
    learner = build_learner(cfg, "image", train.image_shape, train.n_classes)
    generator = torch.Generator().manual_seed(0)
    shape = (cfg.algo.episode.ways, cfg.algo.episode.shots, cfg.algo.episode.queries)
    batches = [train.sample(generator, cfg.algo.meta_batch, *shape) for _ in range(args.iterations + 1)]

    learner.meta_train_step(batches[0])  # warm-up: kernel choice, allocator
    learner.zero_grad()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        started = time.perf_counter()
        for batch in batches[1:]:
            learner.meta_train_step(batch)
            learner.zero_grad()
        seconds = (time.perf_counter() - started) / args.iterations
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    flops = sum(e.flops for e in events) / args.iterations
    # self time of the operators whose work the profiler counts (the convolutions and products)
    counted = sum(e.self_cpu_time_total for e in events if e.flops) / 1e6 / args.iterations
    print(f"meta-iteration: {seconds:.3f} s ({1 / seconds:.3f} it/s; profiler overhead included), "
          f"{args.threads} thread(s)")
    print(f"counted arithmetic: {flops / 1e9:.1f} GFLOP a meta-iteration, "
          f"{flops / 1e9 / seconds:.1f} GFLOP/s over the whole iteration")
    print(f"operators with counted FLOPs: {counted:.3f} s self time ({flops / 1e9 / max(counted, 1e-9):.1f} GFLOP/s "
          f"while in them), the rest {seconds - counted:.3f} s")


if __name__ == "__main__":
    main()
