"""The acting policy's own randomness in meta-RL."""
from __future__ import annotations

import torch


def task_generator(tasks, device) -> torch.Generator:
    """A generator seeded by the (first) task of ``tasks``, so a test task is always played with
    the same draws and a resumed run repeats its training rollouts exactly."""
    return torch.Generator(device=device).manual_seed(int(tasks.seeds[0]))
