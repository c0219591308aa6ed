"""Where a second-order MAML meta-iteration spends its time on this machine.

    python scripts/profile_maml.py                     # paper settings: 5-way 1-shot, 15 queries, meta-batch 32
    python scripts/profile_maml.py algo.task_batching=vmap --threads 1
    python scripts/profile_maml.py --precision bf16    # as trainer.precision=bf16 trains (autocast)
    python scripts/profile_maml.py --fills             # which operators' zero fills take the time

Prints the operators by their own time, the shares of convolutions, batch norm, max-pool and
the memory-bound rest, and the convolutions' forward work (the profiler counts no backward work).
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
from metarun.engine.precision import autocast_for

# operators' own time grouped by what they compute (substrings of the aten operator names)
CATEGORIES = {"convolution": ("convolution",), "batch norm": ("batch_norm", "BatchNorm"),
              "max-pool": ("max_pool",), "fill / sum / copy": ("fill_", "aten::sum", "copy_", "zero_"),
              "other": ()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. algo.meta_batch=16")
    parser.add_argument("--iterations", type=int, default=3, help="profiled meta-iterations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: under the autocast that trainer.precision=bf16 trains in")
    parser.add_argument("--fills", action="store_true",
                        help="also list the fills (aten::fill_) by the operator that called them and the shape filled")
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

    device = torch.device("cpu")
    with autocast_for(args.precision, device):
        learner.meta_train_step(batches[0])  # warm-up: kernel choice, allocator
    learner.zero_grad()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=args.fills) as prof:
        started = time.perf_counter()
        for batch in batches[1:]:
            with autocast_for(args.precision, device):
                learner.meta_train_step(batch)
            learner.zero_grad()
        seconds = (time.perf_counter() - started) / args.iterations
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    shares = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        category = next((c for c, words in CATEGORIES.items() if any(w in e.key for w in words)), "other")
        shares[category] += e.self_cpu_time_total / total
    print(f"meta-iteration: {seconds:.3f} s ({1 / seconds:.3f} it/s with the profiler's overhead), "
          f"{args.threads} thread(s), {args.precision}")
    print("own time by kind: " + ", ".join(f"{c} {100 * share:.0f}%" for c, share in shares.items()))
    forward = sum(e.flops for e in events if "conv" in e.key) / args.iterations
    print(f"convolution forward work counted by the profiler: {forward / 1e9:.1f} GFLOP a meta-iteration")
    if args.fills:
        print_fills(prof.events(), args.iterations, args.rows)


def print_fills(events, iterations: int, rows: int) -> None:
    """The time of aten::fill_ a meta-iteration, by the nearest caller that is not a zero_ or a
    zeros, and by the shape filled."""
    by_caller: dict[tuple[str, str], list[float]] = {}
    for event in events:
        if event.name != "aten::fill_":
            continue
        caller = event.cpu_parent
        while caller is not None and caller.name in ("aten::zero_", "aten::zeros", "aten::zeros_like"):
            caller = caller.cpu_parent
        key = (caller.name if caller is not None else "(top level)", str(event.input_shapes[0] if event.input_shapes else ""))
        by_caller.setdefault(key, []).append(event.cpu_time_total)
    total = sum(sum(times) for times in by_caller.values())
    print(f"fills: {total / 1e3 / iterations:.1f} ms a meta-iteration; by caller and shape:")
    for (caller, shape), times in sorted(by_caller.items(), key=lambda item: -sum(item[1]))[:rows]:
        print(f"  {sum(times) / 1e3 / iterations:8.1f} ms  {len(times) / iterations:6.0f} calls  {caller} {shape}")


if __name__ == "__main__":
    main()
