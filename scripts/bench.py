"""Throughput on this machine: episode sampling, meta-training, data loading.

    python scripts/bench.py                       # embedded 28x28 Omniglot
    METARUN_DATA_DIR=... python scripts/bench.py --local   # also time the decoded-file cache

Prints one line per figure; the README's benchmark table is copied from its output.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from metarun.algorithms import build_learner
from metarun.data import build_sources
from metarun.data.omniglot import load_cached, load_embedded
from metarun.engine.trainer import autocast_for, build_optimizer


def timed(fn, repeat: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def config(*overrides):
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def bench_sampling(sources) -> None:
    generator = torch.Generator().manual_seed(0)
    for ways, shots in ((5, 1), (20, 5)):
        per = timed(lambda: sources["train"].sample(generator, 32, ways, shots, 15), 20)
        print(f"episodes sampled/s, Omniglot {ways}-way {shots}-shot 15 queries (meta-batch 32): {32 / per:,.0f}")


def bench_training(algo_overrides: list[str], label: str, repeat: int) -> None:
    cfg = config(*algo_overrides)
    device = torch.device("cpu")
    sources = build_sources(cfg.data, cfg.paths)
    learner = build_learner(cfg, "image", sources["train"].image_shape, sources["train"].n_classes)
    optimizer = build_optimizer(learner, cfg.algo.optimizer)
    generator = torch.Generator().manual_seed(0)
    episode = cfg.algo.episode

    def step():
        batch = sources["train"].sample(generator, cfg.algo.meta_batch, episode.ways, episode.shots,
                                        episode.queries)
        optimizer.zero_grad()
        with autocast_for(cfg.trainer.precision, device):
            learner.meta_train_step(batch)
        optimizer.step()

    per = timed(step, repeat)
    label += ", bf16 autocast" if cfg.trainer.precision == "bf16" else ""
    episode = f"{episode.ways}-way {episode.shots}-shot {episode.queries} queries"
    print(f"{label} ({episode}, meta-batch {cfg.algo.meta_batch}): {cfg.algo.meta_batch / per:.2f} "
          f"tasks/s, {1 / per:.2f} meta-iterations/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="also time the cache of decoded files")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    started = time.perf_counter()
    load_embedded()
    print(f"embedded 28x28 Omniglot load (sha256 check + decompress): {time.perf_counter() - started:.2f} s")
    if args.local:
        root = Path(os.environ["METARUN_DATA_DIR"]) / "omniglot"
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            load_cached(root, Path(cache), 28, False, "")
            print(f"first load from files (decode 32,460 PNGs): {time.perf_counter() - started:.2f} s")
            started = time.perf_counter()
            load_cached(root, Path(cache), 28, False, "")
            print(f"cached load: {time.perf_counter() - started:.2f} s")
    cfg = config()
    bench_sampling(build_sources(cfg.data, cfg.paths))
    bench_training(["algo=protonet"], "ProtoNet paper training episodes", 10)
    bench_training(["algo=protonet", "trainer.precision=bf16"], "ProtoNet paper training episodes", 10)
    print("Every algorithm with its paper's Omniglot 5-way 1-shot settings (meta-batch, episode shape):")
    for algo in ("maml", "fomaml", "anil", "metasgd", "reptile", "protonet", "matchingnet", "relationnet"):
        overrides = [f"algo={algo}"]
        if algo == "protonet":  # the paper trains with 60 ways; here the 5-way test shape
            overrides += ["algo.episode.ways=5", "algo.episode.queries=15"]
        bench_training(overrides, f"  {algo}", 3 if algo in ("maml", "metasgd") else 10)

if __name__ == "__main__":
    main()
