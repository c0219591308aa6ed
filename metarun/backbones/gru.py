"""A gated recurrent unit stepped one input at a time: the memory of recurrent meta-learners
(RL²), whose hidden state carries what the agent has learnt about the task so far."""
from __future__ import annotations

import torch
from torch import nn


class GRUCore(nn.Module):
    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.cell = nn.GRUCell(in_features, hidden)
        self.out_features = hidden

    def initial_state(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, self.out_features, device=device)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The next hidden state [B, hidden], which is also the feature vector."""
        return self.cell(x, state)
