"""MANN on synthetic few-shot tasks: does its memory learn to bind examples to labels?

Each task draws ``ways`` fresh class prototypes from N(0, I) in ``dim`` dimensions; an example
is its prototype plus N(0, noise^2) noise, fed to MANN as its "embedding" (no backbone). The
features are perfect, so all that is left to learn is MANN's own job: store each support
example with its late label and find that label again from a new example of the class. This
separates the memory's learning curve from the image embedding's (on Omniglot both are learned
at once). A MANN sits at chance for a long stretch before this binding appears, so the curve
says how long to train.

    python scripts/mann_synthetic_check.py --steps 5000 --lr 1e-3        # the paper's model size
    python scripts/mann_synthetic_check.py --steps 1200 --lr 1e-2 hidden=64 slots=16 slot_size=16 read_heads=1

Model keys (``hidden=64`` ...) override ``conf/algo/mann.yaml``. Prints the training accuracy
(mean over the last ``--every`` updates) as it goes and, at the end, the accuracy on held-out
tasks of the model in eval mode.
"""
from __future__ import annotations

import argparse
import time
from importlib.resources import files

import torch
from omegaconf import OmegaConf
from torch import nn

from metarun.algorithms.mann import MANN
from metarun.algorithms.sequence import embed_tasks
from metarun.tasks import TaskBatch


class Features(nn.Module):
    """The identity as a backbone: the synthetic examples already are the features."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def gaussian_class_tasks(generator: torch.Generator, n_tasks: int, ways: int, shots: int, queries: int,
                         dim: int, noise: float) -> TaskBatch:
    """``n_tasks`` tasks, each with fresh prototypes; labels 0..ways-1, grouped by class."""
    prototypes = torch.randn(n_tasks, ways, dim, generator=generator)

    def examples(per_class: int):
        labels = torch.arange(ways).repeat_interleave(per_class).expand(n_tasks, -1)
        centres = prototypes.gather(1, labels.unsqueeze(-1).expand(-1, -1, dim))
        return centres + noise * torch.randn(centres.shape, generator=generator), labels.contiguous()

    return TaskBatch(*examples(shots), *examples(queries))


def build_mann(dim: int, ways: int, overrides: list[str]) -> MANN:
    cfg = OmegaConf.merge(OmegaConf.load(files("metarun.conf") / "algo" / "mann.yaml"),
                          OmegaConf.from_dotlist(overrides))
    return MANN(Features(dim), ways, cfg, OmegaConf.create({"max_steps": 1}))  # what a curriculum would follow


def held_out_accuracy(learner: MANN, batch: TaskBatch) -> float:
    learner.eval()
    with torch.no_grad():
        support, query = embed_tasks(learner.embed, batch.support_x, batch.query_x)
        logits = learner.read_sequences(support, batch.support_y, query)[2]
    learner.train()
    return float((logits.argmax(-1) == batch.query_y).float().mean())


def train(learner: MANN, steps: int, lr: float, task_shape: dict, seed: int, every: int = 0) -> list[float]:
    """Adam on fresh tasks for ``steps`` updates; returns the training accuracy of each update."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(learner.parameters(), lr)
    accuracy, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        accuracy.append(float(learner.meta_train_step(gaussian_class_tasks(generator, **task_shape))["acc"]))
        optimizer.step()
        if every and step % every == 0:
            recent = accuracy[-every:]
            print(f"update {step}: training accuracy {sum(recent) / len(recent):.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="MANN keys, e.g. hidden=64 read_heads=1")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=3, help="a class")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--eval-tasks", type=int, default=500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = dict(ways=args.ways, shots=args.shots, queries=args.queries, dim=args.dim, noise=args.noise)
    learner = build_mann(args.dim, args.ways, args.overrides)
    train(learner, args.steps, args.lr, {"n_tasks": args.meta_batch, **shape}, args.seed, args.every)
    held_out = gaussian_class_tasks(torch.Generator().manual_seed(args.seed + 1), args.eval_tasks, **shape)
    print(f"held-out accuracy on {args.eval_tasks} new tasks: {held_out_accuracy(learner, held_out):.3f} "
          f"(chance {1 / args.ways:.3f})")


if __name__ == "__main__":
    main()
