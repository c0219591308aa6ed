"""Sinusoid regression tasks of the MAML paper (Finn et al. 2017, Sec. 5.1).

Each task is y = A sin(x - phase) with A ~ U[amplitude], phase ~ U[phase], x ~ U[x_range];
K support points to adapt on, the query points to be scored on (MSE).
"""
from __future__ import annotations

import torch

from metarun.data.episodes import EpisodeSource
from metarun.tasks import TaskBatch


class SinusoidSource(EpisodeSource):
    metric = "mse"
    kind = "regression"
    image_shape = (1,)  # one input feature

    def __init__(self, amplitude, phase, x_range, device="cpu"):
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)
        self.device = device

    def to(self, device) -> "SinusoidSource":
        self.device = device
        return self

    @staticmethod
    def _uniform(generator, shape, bounds):
        low, high = bounds
        return torch.rand(shape, generator=generator) * (high - low) + low

    def sample(self, generator, n_tasks, ways, shots, queries) -> TaskBatch:
        amplitude = self._uniform(generator, (n_tasks, 1, 1), self.amplitude)
        phase = self._uniform(generator, (n_tasks, 1, 1), self.phase)
        x = self._uniform(generator, (n_tasks, shots + queries, 1), self.x_range)
        y = amplitude * torch.sin(x - phase)
        x, y = x.to(self.device), y.to(self.device)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
