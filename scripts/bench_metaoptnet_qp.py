"""Time MetaOptNet's SVM head (metarun.algorithms.metaoptnet.svm_dual_weights): solving the
Crammer-Singer dual of one episode and differentiating through it, forward and backward, on
features shaped like Conv4's (64 numbers after a ReLU, correlated: the hard case for the solver)
and like a wide network's (640), with the authors' kernel ridge of 1 and with almost none. Prints the median over repeats and how the solve ended.

    python scripts/bench_metaoptnet_qp.py
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from metarun.algorithms import metaoptnet

EPISODES = ((5, 1), (5, 5), (20, 1), (20, 5), (60, 1))  # (ways, shots)


def relu_like_features(n: int, dims: int, generator: torch.Generator) -> torch.Tensor:
    common = 2 * torch.randn(1, dims, generator=generator, dtype=torch.float64)
    return (torch.randn(n, dims, generator=generator, dtype=torch.float64) + common).abs()


def main(repeats: int = 20) -> None:
    generator = torch.Generator().manual_seed(0)
    fallbacks = []
    original_fista = metaoptnet.fista_dual

    def counted_fista(*args, **kwargs):
        fallbacks.append(1)
        return original_fista(*args, **kwargs)

    metaoptnet.fista_dual = counted_fista
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for ridge, dims in ((1.0, 64), (1e-6, 64), (1.0, 640)):
        for ways, shots in EPISODES:
            times, fallbacks[:] = [], []
            for _ in range(repeats):
                x = relu_like_features(ways * shots, dims, generator).requires_grad_()
                targets = F.one_hot(torch.arange(ways).repeat(shots), ways).double()
                started = time.perf_counter()
                weights = metaoptnet.svm_dual_weights(x, targets, 0.1, ridge)
                weights.square().sum().backward()
                times.append(time.perf_counter() - started)
            print(f"{ways:>2}-way {shots}-shot, {dims:>3} features, kernel ridge {ridge:g}: {statistics.median(times) * 1e3:7.1f} ms "
                  f"(solve and backward; FISTA fallback in {len(fallbacks)} of {repeats})")


if __name__ == "__main__":
    main()
