"""Outer updates a second with and without ``trainer.cuda_graph``, and how far apart the two
runs' parameters end up: the trainer's own update path, on the same meta-batches from the
same initial parameters.

    python scripts/bench_cuda_graph.py                                   # 20-way MAML of the Lake recipe
    python scripts/bench_cuda_graph.py --updates 200 algo.inner_steps=1 data.queries=5
    python scripts/bench_cuda_graph.py --base algo=maml                 # 5-way 1-shot paper settings

Needs a CUDA device. Prints, per mode, updates/s (median over the second half, past warm-up and
recording), the training loss at the end, and the largest parameter difference between modes.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from metarun.algorithms import build_learner
from metarun.data import build_sources, train_shape
from metarun.engine.cuda_graph import make_capturable
from metarun.engine.reproducibility import deterministic_gpu_kernels, seed_everything
from metarun.engine.trainer import Trainer


def run(cfg, sources, updates: int, device: torch.device, capturable: bool) -> tuple[list[float], list[float], dict]:
    """Durations and losses of ``updates`` outer updates; the final parameters. ``capturable``:
    eager updates with the Adam arithmetic of recorded ones (rates in tensors, bias corrections
    on the device), so that recording is the only difference."""
    seed_everything(cfg.seed)
    train = sources["train"]
    learner = build_learner(cfg, train.kind, train.image_shape, train.n_classes).to(device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, learner, sources, Path(run_dir), device)
        update = trainer.updater(learner, trainer.optimizer)
        if capturable and not cfg.trainer.cuda_graph:
            make_capturable(trainer.optimizer, device)
        durations, losses = [], []
        for _ in range(updates):
            started = time.perf_counter()
            metrics, _ = trainer.outer_update(update, train_shape(cfg))  # reads the metrics: synchronises
            trainer.scheduler.step()
            durations.append(time.perf_counter() - started)
            losses.append(metrics["loss"])
    return durations, losses, {k: v.detach().clone() for k, v in learner.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. algo.meta_batch=32")
    parser.add_argument("--base", default="+experiment=maml_omniglot_lake_20way",
                        help="the configuration the overrides apply to")
    parser.add_argument("--updates", type=int, default=100)
    args = parser.parse_args()
    device = torch.device("cuda")
    results = {}
    for mode, graphed, capturable in (("eager", False, False), ("eager, capturable Adam", False, True),
                                      ("cuda_graph", True, True)):
        with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                args.base, "device=cuda", "trainer.progress=false", *args.overrides,
                f"trainer.cuda_graph={str(graphed).lower()}"])
        if cfg.trainer.deterministic:
            deterministic_gpu_kernels()
        sources = build_sources(cfg.data, cfg.paths)
        for source in sources.values():
            if source is not None:
                source.to(device)
        durations, losses, parameters = run(cfg, sources, args.updates, device, capturable)
        rate = 1 / statistics.median(durations[len(durations) // 2:])
        print(f"{mode:22s}: {rate:7.1f} updates/s, first update {durations[0]:.2f} s, "
              f"loss at update {args.updates}: {losses[-1]:.6f}", flush=True)
        results[mode] = losses, parameters
    graph_losses, graph = results["cuda_graph"]
    for mode in ("eager", "eager, capturable Adam"):
        losses, parameters = results[mode]
        largest = max(float((parameters[k] - graph[k]).abs().max()) for k in graph)
        print(f"cuda_graph against {mode}: largest parameter difference after {args.updates} updates "
              f"{largest:.3g}; loss differences at updates 1, 10, {args.updates}: "
              + ", ".join(f"{abs(losses[i] - graph_losses[i]):.3g}" for i in (0, 9, args.updates - 1)))


if __name__ == "__main__":
    main()
