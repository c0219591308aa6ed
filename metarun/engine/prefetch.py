"""Meta-training batches drawn ahead of the step that uses them, on a background thread.

At a GPU's step rate the sampler would be a large part of every step (about 3 ms for a meta-batch
of 32 Omniglot episodes against a 38-ms MAML update on an H200); drawn ahead, the step finds its
batch ready. The thread draws from its own copy of the episode generator and hands each batch over
with the generator's state after it; the trainer's generator takes that state when the batch is
used. So the trainer's generator, and every checkpoint, always hold the state after the batches
trained on, and a resumed run draws what the interrupted one would have drawn: prefetching
changes when batches are drawn, never which.
"""
from __future__ import annotations

import queue
import threading

import torch

from metarun.data.episodes import EpisodeSource
from metarun.errors import ConfigError
from metarun.tasks import TaskBatch


class Prefetcher:
    def __init__(self, source: EpisodeSource, generator: torch.Generator, n_tasks: int, shape, depth: int = 2):
        self.generator = generator
        self.ready: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        own = torch.Generator().set_state(generator.get_state())
        self.thread = threading.Thread(target=self.draw, args=(source, own, n_tasks, tuple(shape)),
                                       name="metarun-prefetch", daemon=True)
        self.thread.start()

    def draw(self, source: EpisodeSource, generator: torch.Generator, n_tasks: int, shape) -> None:
        while not self.stopping.is_set():
            try:
                item = (source.sample(generator, n_tasks, *shape), generator.get_state())
            except Exception as error:  # raised again by next(), in the training thread
                item = (error, None)
            while not self.stopping.is_set():
                try:
                    self.ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is None:
                return

    def next(self) -> TaskBatch:
        batch, state = self.ready.get()
        if state is None:
            raise batch
        self.generator.set_state(state)
        return batch

    def close(self) -> None:
        """Stops the thread; batches drawn and not used are dropped (the generator never saw them)."""
        self.stopping.set()
        self.thread.join()


def prefetching(setting, device: torch.device) -> bool:
    """``trainer.prefetch``: true, false, or auto: on a GPU, whose steps are short enough for the
    sampler to matter, and not on a CPU, where a step takes a hundred times a draw and a second
    thread would only compete with it for the cores."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ConfigError("trainer.prefetch", setting, "true, false or auto")
