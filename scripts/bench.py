"""Throughput on this machine: episode sampling, meta-training, data loading.

    python scripts/bench.py                       # embedded 28x28 Omniglot
    python scripts/bench.py --device cuda         # on a GPU (adds Meta-LSTM, SNAIL, peak memory)
    METARUN_DATA_DIR=... python scripts/bench.py --local   # also time the decoded-file cache
    python scripts/bench.py --no-host-memory-cache  # glibc's default malloc (device.cache_host_memory=false)
    python scripts/bench.py backbone.fold_first_batch_norm=false  # any config overrides, for every figure
    python scripts/bench.py --algos metalstm backbone.channels=32  # only these learners' training steps

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
from metarun.engine.host_memory import cache_host_memory
from metarun.engine.precision import autocast_for, resolve_precision
from metarun.engine.trainer import build_optimizer


def timed(fn, repeat: int, device: torch.device = torch.device("cpu")) -> float:
    """Seconds per call, after one warm-up call; on a GPU, waits for the queued kernels."""
    def finish():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    finish()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    finish()
    return (time.perf_counter() - started) / repeat


COMMON_OVERRIDES: list[str] = []  # from the command line, applied to every configuration


def config(*overrides):
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        return compose(config_name="config", overrides=COMMON_OVERRIDES + list(overrides))


def bench_sampling(sources, device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    for ways, shots in ((5, 1), (20, 5)):
        per = timed(lambda: sources["train"].sample(generator, 32, ways, shots, 15), 20, device)
        print(f"episodes sampled/s, Omniglot {ways}-way {shots}-shot 15 queries (meta-batch 32): {32 / per:,.0f}")


def bench_training(algo_overrides: list[str], label: str, repeat: int, device: torch.device) -> None:
    cfg = config(*algo_overrides)
    sources = build_sources(cfg.data, cfg.paths)
    sources["train"].to(device)
    learner = build_learner(cfg, "image", sources["train"].image_shape,
                            sources["train"].n_classes).to(device)
    optimizer = build_optimizer(learner, cfg.algo.optimizer)
    generator = torch.Generator().manual_seed(0)
    episode = cfg.algo.episode
    precision = resolve_precision(cfg.trainer.precision, device)

    def step():
        batch = sources["train"].sample(generator, cfg.algo.meta_batch, episode.ways, episode.shots,
                                        episode.queries)
        optimizer.zero_grad()
        with autocast_for(precision, device):
            learner.meta_train_step(batch)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per = timed(step, repeat, device)
    label += ", bf16 autocast" if precision == "bf16" else ""
    episode = f"{episode.ways}-way {episode.shots}-shot {episode.queries} queries"
    memory = (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
              if device.type == "cuda" else "")
    print(f"{label} ({episode}, meta-batch {cfg.algo.meta_batch}): {cfg.algo.meta_batch / per:.2f} "
          f"tasks/s, {1 / per:.2f} meta-iterations/s{memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="also time the cache of decoded files")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--no-host-memory-cache", action="store_true",
                        help="as device.cache_host_memory=false: glibc's default malloc thresholds")
    parser.add_argument("--algos", help="time only these learners' training steps, comma-separated (any "
                        "learner, also those too slow for the default list on a CPU)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every figure, e.g. backbone.channels=32")
    args = parser.parse_args()
    COMMON_OVERRIDES.extend(args.overrides)
    device = torch.device(args.device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    cached = cache_host_memory(config().device.cache_host_memory and not args.no_host_memory_cache)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}, "
          f"host memory cache {'on' if cached else 'off'}")
    if args.algos:
        return bench_learners(args.algos.split(","), device)
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
    sources = build_sources(cfg.data, cfg.paths)
    sources["train"].to(device)
    bench_sampling(sources, device)
    bench_training(["algo=protonet"], "ProtoNet paper training episodes", 10, device)
    bench_training(["algo=protonet", "trainer.precision=bf16"], "ProtoNet paper training episodes", 10, device)
    algos = ["maml", "fomaml", "anil", "metasgd", "reptile", "protonet", "matchingnet", "relationnet"]
    if device.type == "cuda":  # too slow for this benchmark on a CPU
        algos += ["metalstm", "snail"]
    bench_learners(algos, device)


def bench_learners(algos: list[str], device: torch.device) -> None:
    print("Every algorithm with its paper's Omniglot 5-way 1-shot settings (meta-batch, episode shape):")
    for algo in algos:
        overrides = [f"algo={algo}"]
        if algo == "protonet":  # the paper trains with 60 ways; here the 5-way test shape
            overrides += ["algo.episode.ways=5", "algo.episode.queries=15"]
        slow = algo in ("maml", "metasgd", "metalstm", "snail") and device.type == "cpu"
        bench_training(overrides, f"  {algo}", 3 if slow else 10, device)


if __name__ == "__main__":
    main()
