"""MetaNAS's search network on a CPU: one forward and backward pass (the unit of every inner
step of DARTS, in meta-training and at test) in NCHW and in NHWC memory layout
(algo.search_space.channels_last), alternating in blocks so that other load on the machine
hits both alike, and the gradients of the two compared.

    python scripts/bench_metanas.py                       # the CPU recipe's network: 4 channels, 20 images
    python scripts/bench_metanas.py --channels 8 --rounds 5

The CPU recipe (metanas_omniglot_20way_60min) makes 2 passes an inner step (architecture, then
weights), 5 steps a task and 5 tasks a meta-update, and 2 x 20 passes a test episode.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from bench import timed
from metarun.backbones.darts_cells import CellNetwork
from metarun.engine.host_memory import cache_host_memory


def build(channels: int, channels_last: bool) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    network = CellNetwork(1, channels, 4, [1, 3], 3, 3, channels_last=channels_last)
    model = torch.nn.Sequential(network, torch.nn.Linear(network.out_features, 20))
    return model, list(model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_host_memory(True)
    x = torch.rand(args.images, 1, 28, 28)
    y = torch.arange(args.images) % 20

    def pass_of(model, params):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params)

    layouts = {"NCHW": build(args.channels, False), "NHWC": build(args.channels, True)}
    gradients = {name: pass_of(*built) for name, built in layouts.items()}
    difference = max(float((a - b).abs().max()) for a, b in zip(*gradients.values()))
    times = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, built in layouts.items():
            times[name].append(timed(lambda: pass_of(*built), args.repeat))
    for name, seconds in times.items():
        print(f"{name}: {statistics.median(seconds):.3f} s a forward and backward pass "
              f"({args.channels} channels, {args.images} images, {args.threads} threads; rounds: "
              f"{', '.join(f'{s:.3f}' for s in seconds)})")
    print(f"NHWC / NCHW speed: {statistics.median(times['NCHW']) / statistics.median(times['NHWC']):.2f}x; "
          f"largest gradient difference {difference:.1e}")


if __name__ == "__main__":
    main()
