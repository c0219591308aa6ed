"""How much of a meta-training step waits for its batch, with and without trainer.prefetch.

    python scripts/bench_prefetch.py                  # a GPU-rate stand-in step: 38 ms (MAML on an H200)
    python scripts/bench_prefetch.py --step-ms 300    # a CPU-rate step

No GPU needed: the step is a stand-in that sleeps for --step-ms, as the Python thread of a GPU
step waits for its kernels (the sleep releases the GIL, as that wait does). The batch is the MAML
recipe's (meta-batch 32 of Omniglot 5-way 1-shot 15-query episodes, Vinyals split). Prints the
share of wall time spent drawing (no prefetch) or waiting for (prefetch) the batches.
"""
from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_module

from metarun.data import build_sources
from metarun.engine.prefetch import Prefetcher


def waiting_share(source, step_s: float, steps: int, prefetch: bool, meta_batch: int, shape) -> float:
    generator = torch.Generator().manual_seed(0)
    prefetcher = Prefetcher(source, generator, meta_batch, shape) if prefetch else None
    waited = 0.0
    started = time.perf_counter()
    try:
        for _ in range(steps):
            drawing = time.perf_counter()
            if prefetcher is None:
                source.sample(generator, meta_batch, *shape)
            else:
                prefetcher.next()
            waited += time.perf_counter() - drawing
            time.sleep(step_s)
    finally:
        if prefetcher is not None:
            prefetcher.close()
    return waited / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-ms", type=float, default=38.0, help="the stand-in step's duration")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--meta-batch", type=int, default=32)
    args = parser.parse_args()
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=omniglot"])
    source = build_sources(cfg.data, cfg.paths)["train"]
    shape = (5, 1, 15)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; stand-in step {args.step_ms:g} ms, "
          f"meta-batch {args.meta_batch} of 5-way 1-shot 15-query Omniglot episodes")
    for prefetch in (False, True, False, True):
        share = waiting_share(source, args.step_ms / 1e3, args.steps, prefetch, args.meta_batch, shape)
        print(f"  prefetch {'on ' if prefetch else 'off'}: {100 * share:.2f}% of the wall time waiting for batches")


if __name__ == "__main__":
    main()
