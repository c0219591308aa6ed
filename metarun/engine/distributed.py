"""One run on several processes or GPUs, launched by ``torchrun``.

Every rank draws the same meta-batch from the same seeded stream and meta-trains on its own
contiguous share of the tasks; the meta-gradients are then averaged across ranks, so each rank
applies the same update to the same parameters and the run equals the one-process run of the
same seed (up to floating-point summation order). No ``DistributedDataParallel`` wrapper is
involved: it cannot see the double-backward graph of a second-order inner loop, which is why
MAML implementations built on it break on several GPUs. Rank 0 alone logs, validates, writes
checkpoints and tests.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metarun.errors import ConfigError
from metarun.tasks import TaskBatch


def launched_rank() -> int:
    """This process's rank when started by torchrun, else 0."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_processes() -> int:
    """Processes torchrun started on this machine (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"  # where collectives of values made here (metrics) happen

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def check_meta_batch(self, meta_batch: int) -> None:
        if self.active and meta_batch % self.world_size:
            raise ConfigError("algo.meta_batch", meta_batch,
                              f"a multiple of the {self.world_size} processes torchrun started")

    def shard(self, batch: TaskBatch) -> TaskBatch:
        """This rank's contiguous share of the meta-batch."""
        if not self.active:
            return batch
        size = len(batch) // self.world_size
        return batch.select(slice(self.rank * size, (self.rank + 1) * size))

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Every rank's ``.grad`` becomes the mean over ranks (one all-reduce for all of them).
        Each rank's gradient is the mean over its share, and the shares are equal, so the result
        is the mean over the whole meta-batch."""
        if not self.active:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Running batch-norm statistics, which each rank updated on its own tasks, are averaged,
        so every rank (and the checkpoint) holds the same ones."""
        if not self.active:
            return
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.world_size

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks (a new tensor; ``tensor`` itself in one process)."""
        if not self.active:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        if not self.active:
            return metrics
        values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return dict(zip(metrics, (values / self.world_size).tolist()))

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (e.g. its run directory)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def start(device_name: str) -> tuple[Ranks, str]:
    """Joins the process group when torchrun started this process; returns the ranks and the
    device this rank uses (``cuda:LOCAL_RANK`` on GPUs)."""
    world_size = launched_world_size()
    if world_size == 1:
        return Ranks(), device_name
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Ranks(dist.get_rank(), world_size, "cuda" if use_cuda else "cpu"), device_name


def stop(ranks: Ranks, wait_for_others: bool = True) -> None:
    """Leave the process group (together, unless this rank is failing or has no collectives left)."""
    if ranks.active and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()
