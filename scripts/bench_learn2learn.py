"""metarun's MAML against learn2learn 0.2.0's ``MAML`` wrapper, side by side in one process.

Both meta-train the same network (metarun's Conv4 + linear head, batch statistics in batch norm)
with second-order MAML on Omniglot 5-way 1-shot, 15 queries, meta-batch 32, 1 inner step of
0.4, Adam 1e-3, on the same sampled meta-batches; the figure is meta-iterations per second.

learn2learn is never a dependency of metarun. Its 0.2.0 sdist does not build on Python 3.11
(its pre-generated Cython C needs longintrepr.h) and ``import learn2learn`` needs torchvision
and gym, so this script loads only the pure-Python files its MAML wrapper needs
(``algorithms/maml.py``, ``algorithms/base_learner.py``, ``utils/``) from the extracted sdist:

    pip download --no-deps --no-binary :all: learn2learn==0.2.0 && tar xzf learn2learn-0.2.0.tar.gz
    python scripts/bench_learn2learn.py --learn2learn-src learn2learn-0.2.0/learn2learn
    python scripts/bench_learn2learn.py --learn2learn-src ... backbone.fold_first_batch_norm=false  # overrides
"""
from __future__ import annotations

import argparse
import sys
import types

import torch
from torch import nn

from bench import COMMON_OVERRIDES, config, timed
from metarun.algorithms import build_learner
from metarun.data import build_sources
from metarun.engine.host_memory import cache_host_memory
from metarun.engine.trainer import build_optimizer


def load_learn2learn_maml(src: str):
    """learn2learn.algorithms.maml.MAML without running learn2learn's package __init__ files."""
    for name, path in (("learn2learn", src), ("learn2learn.algorithms", f"{src}/algorithms")):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    from learn2learn.algorithms.maml import MAML
    return MAML


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn2learn-src", required=True,
                        help="the learn2learn/ folder of the extracted learn2learn-0.2.0 sdist")
    parser.add_argument("--repeat", type=int, default=8, help="timed meta-iterations per implementation")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("overrides", nargs="*", help="config overrides for both, e.g. backbone.fold_first_batch_norm=false")
    args = parser.parse_args()
    COMMON_OVERRIDES.extend(args.overrides)
    l2l_maml = load_learn2learn_maml(args.learn2learn_src)
    device = torch.device(args.device)

    cfg = config("algo=maml")
    cache_host_memory(cfg.device.cache_host_memory)  # one process: the same allocator for both
    sources = build_sources(cfg.data, cfg.paths)
    sources["train"].to(device)
    image_shape = sources["train"].image_shape
    theirs_model = build_learner(cfg, "image", image_shape, None).model.to(device)  # the same network
    theirs = l2l_maml(theirs_model, lr=cfg.algo.inner_lr, first_order=False)
    theirs_optimizer = torch.optim.Adam(theirs.parameters(), lr=cfg.algo.optimizer.lr)
    loss = nn.CrossEntropyLoss()
    episode, meta_batch = cfg.algo.episode, cfg.algo.meta_batch
    generator = torch.Generator().manual_seed(0)

    def sample():
        return sources["train"].sample(generator, meta_batch, episode.ways, episode.shots, episode.queries)

    def metarun_step(task_batching: str):
        ours = build_learner(config("algo=maml", f"algo.task_batching={task_batching}"), "image", image_shape,
                             None).to(device)
        ours_optimizer = build_optimizer(ours, cfg.algo.optimizer)

        def step():
            batch = sample()
            ours_optimizer.zero_grad()
            ours.meta_train_step(batch)
            ours_optimizer.step()
        return step

    def learn2learn_step():
        batch = sample()
        theirs_optimizer.zero_grad()
        for task in batch:
            learner = theirs.clone()
            learner.adapt(loss(learner(task.support_x), task.support_y))
            (loss(learner(task.query_x), task.query_y) / meta_batch).backward()
        theirs_optimizer.step()

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}; MAML second order, Omniglot "
          f"{episode.ways}-way {episode.shots}-shot {episode.queries} queries, meta-batch {meta_batch}, "
          f"{cfg.algo.inner_steps} inner step")
    rates = {}
    for name, step in (("learn2learn 0.2.0 MAML", learn2learn_step),
                       ("metarun maml, algo.task_batching=loop", metarun_step("loop")),
                       ("metarun maml, algo.task_batching=vmap", metarun_step("vmap"))):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rates[name] = 1 / timed(step, args.repeat, device)
        memory = (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                  if device.type == "cuda" else "")
        print(f"{name}: {rates[name]:.3f} meta-iterations/s{memory}")
    for name in list(rates)[1:]:
        print(f"{name} / learn2learn: {rates[name] / rates['learn2learn 0.2.0 MAML']:.2f}x")


if __name__ == "__main__":
    main()
