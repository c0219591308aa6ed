"""Meta-training speed of several configurations side by side: each one's learner is built once,
then they take turns (blocks of --seconds each, --rounds rounds) in one process, so that a change
in the machine's speed during the measurement hits all of them alike.

    python scripts/bench_configs.py \
        --config "max-pool: +experiment=maml_omniglot_15min" \
        --config "strided: +experiment=maml_omniglot_15min backbone.downsample=stride backbone.readout=mean"

Prints each configuration's median meta-iterations/s over the rounds and its ratio to the first.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_module

from metarun.algorithms import build_learner
from metarun.data import build_sources, train_shape
from metarun.engine.precision import autocast_for, resolve_precision
from metarun.engine.trainer import build_optimizer


def training_step(overrides: list[str]):
    """A function doing one outer update of the composed configuration (sampling included)."""
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    source = build_sources(cfg.data, cfg.paths)["train"]
    learner = build_learner(cfg, "image", source.image_shape, source.n_classes)
    optimizer = build_optimizer(learner, cfg.algo.optimizer)
    precision = resolve_precision(cfg.trainer.precision, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)

    def step():
        batch = source.sample(generator, cfg.algo.meta_batch, *train_shape(cfg))
        optimizer.zero_grad()
        with autocast_for(precision, torch.device("cpu")):
            learner.meta_train_step(batch)
        optimizer.step()

    return step


def steps_per_second(step, seconds: float) -> float:
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True,
                        help='"label: override override ..." (repeat for each configuration)')
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one block")
    args = parser.parse_args()
    steps = {}
    for spec in args.config:
        label, _, overrides = spec.partition(":")
        steps[label.strip()] = training_step(overrides.split())
    for step in steps.values():
        step()  # warm-up
    rates = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            rates[label].append(steps_per_second(step, args.seconds))
    first = statistics.median(next(iter(rates.values())))
    for label, measured in rates.items():
        median = statistics.median(measured)
        print(f"{label}: {median:.3f} meta-iterations/s (rounds: {', '.join(f'{r:.3f}' for r in measured)}); "
              f"{median / first:.2f}x the first")


if __name__ == "__main__":
    main()
