"""Conv4's 2x2 max-pool, forward and backward, on its largest map (a MAML query set's first
block: 75 x 64 x 28 x 28, channels-last) in fp32 and bf16, beside a zero fill of the same map
and a ReLU over it (two memory-bound passes for scale). Blocks of each kernel alternate.

    python scripts/bench_max_pool.py --threads 2 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from metarun.engine.host_memory import cache_host_memory


def milliseconds(fn, seconds: float) -> float:
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - started) / calls * 1e3


def kernels(dtype: torch.dtype, images: int) -> dict:
    x = torch.randn(images, 64, 28, 28).to(dtype).contiguous(memory_format=torch.channels_last)
    pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    grad = torch.randn_like(pooled)
    scratch = torch.empty_like(x)
    return {
        "max-pool forward": lambda: torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2]),
        "max-pool backward": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices),
        "zero fill": scratch.zero_,
        "ReLU": lambda: torch.relu(x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=75)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_host_memory(True)
    contenders = {(str(dtype).removeprefix("torch."), name): fn
                  for dtype in (torch.float32, torch.bfloat16) for name, fn in kernels(dtype, args.images).items()}
    times = {key: [] for key in contenders}
    for _ in range(args.rounds):
        for key, fn in contenders.items():
            times[key].append(milliseconds(fn, args.seconds))
    print(f"{args.images} x 64 x 28 x 28, channels-last, {args.threads} thread(s), medians of {args.rounds} blocks:")
    for (dtype, name), blocks in times.items():
        print(f"  {dtype:9s} {name:18s} {statistics.median(blocks):7.3f} ms")


if __name__ == "__main__":
    main()
