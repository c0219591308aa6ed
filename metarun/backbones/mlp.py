"""A fully connected ReLU network (the MAML sinusoid model's hidden layers)."""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int]):
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x):
        return self.net(x)
