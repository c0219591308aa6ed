"""How close Conv4's training step is to the CPU's arithmetic limit: the convolutions of blocks
2-4 (64 -> 64 channels on 14x14, 7x7 and 3x3 maps), forward and backward, on the 15-minute
recipe's episode (60 classes x 3 images = 180 28x28 Omniglot images), in each of the kernels
torch offers on CPU, with the GFLOP/s reached. They hold most of the step's arithmetic; block
1 (one input channel) has little and is bound by memory traffic (see FoldedNormBlock).

    python scripts/bench_conv.py                # 2 threads, 180 images
    python scripts/bench_conv.py --threads 1 --images 75

oneDNN channels-last is what metarun runs (backbone.channels_last=true). A 3x3 convolution's
forward takes 2 * 9 * C_in * C_out * H * W FLOPs an image and its backward twice that (input
and weight gradients). Freed memory stays in the process, as in metarun runs
(device.cache_host_memory).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench import timed
from metarun.engine.host_memory import cache_host_memory

BLOCK_SIDES = (14, 7, 3)  # the input side of blocks 2-4 on a 28x28 image
KERNELS = {  # name: (oneDNN enabled, NNPACK enabled, channels-last)
    "oneDNN channels-last": (True, True, True),
    "oneDNN NCHW": (True, True, False),
    "NNPACK NCHW": (False, True, False),
    "im2col + GEMM NCHW": (False, False, False),
}


def forward_backward(images: int, side: int, channels_last: bool):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(images, 64, side, side).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(64, 64, 3, 3).contiguous(memory_format=layout).requires_grad_()
    b = torch.zeros(64, requires_grad=True)
    grad = torch.randn(images, 64, side, side).contiguous(memory_format=layout)

    def step():
        F.conv2d(x, w, b, padding=1).backward(grad)
        x.grad = w.grad = b.grad = None
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_host_memory(True)
    for name, (onednn, nnpack, channels_last) in KERNELS.items():
        torch.backends.mkldnn.enabled, torch.backends.nnpack.enabled = onednn, nnpack
        total_ms = total_gflop = 0.0
        for block, side in enumerate(BLOCK_SIDES, start=2):
            gflop = 3 * 2 * 9 * 64 * 64 * side * side * args.images / 1e9
            ms = 1e3 * timed(forward_backward(args.images, side, channels_last), args.repeat)
            total_ms, total_gflop = total_ms + ms, total_gflop + gflop
            print(f"{name:22s} block {block} ({side:2d}x{side:2d}): {ms:6.1f} ms  {gflop / ms * 1e3:4.0f} GFLOP/s")
        print(f"{name:22s} blocks 2-4:       {total_ms:6.1f} ms  {total_gflop / total_ms * 1e3:4.0f} GFLOP/s")


if __name__ == "__main__":
    main()
