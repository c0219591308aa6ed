"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, Sec. 2).

    a(x, x_i) = softmax_i s cos(f(x), g(x_i))               (attention over the support set; s = 1)
    P(y = k | x) = sum_i a(x, x_i) [y_i = k]                 (attention-weighted label vote)
    loss = -log P(y | x) over the query examples

Without full-context embeddings (``fce: false``, the paper's Omniglot setting) f = g = the
backbone. With them (Sec. 2.1.2 and appendix A), g embeds each support example in the context of
the whole support set with a bidirectional LSTM, and f attends to the support set over
``fce_steps`` steps of an attention LSTM. Batch norm uses running statistics at test time
(non-transductive). The scale s (``similarity_scale``) is 1 in the paper; Oreshkin et al. (2018)
show that a cosine needs a larger one to train well (see the config).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, PerImageFeatures
from metarun.tasks import Task


class SupportContext(nn.Module):
    """g(x_i, S) = g'(x_i) + forward LSTM state + backward LSTM state over the support set."""

    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)

    def forward(self, support: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(support.unsqueeze(0))
        forward_state, backward_state = states[0].chunk(2, dim=-1)
        return support + forward_state + backward_state


class QueryAttention(nn.Module):
    """f(x, S): K steps of an LSTM fed f'(x) and the read-out r = sum_i softmax(h . g_i) g_i.

    The paper writes the read-out into the LSTM's hidden state ([h, r]); here it enters through
    the input instead, which reaches the same gates through one more linear map.
    """

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.cell = nn.LSTMCell(2 * dim, dim)
        self.steps = steps

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        h, c = query, torch.zeros_like(query)
        for _ in range(self.steps):
            readout = torch.softmax(h @ support.T, dim=1) @ support
            h_hat, c = self.cell(torch.cat([query, readout], dim=1), (h, c))
            h = h_hat + query
        return h


class MatchingNet(PerImageFeatures, MetaLearner):
    def __init__(self, backbone: nn.Module, cfg):
        super().__init__("image")
        self.backbone = backbone
        dim = backbone.out_features
        self.support_context = SupportContext(dim) if cfg.fce else None
        self.query_attention = QueryAttention(dim, cfg.fce_steps) if cfg.fce else None
        self.similarity_scale = cfg.similarity_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).float()

    def predict_from_features(self, task: Task, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the query images' classes."""
        if self.support_context is not None:
            support = self.support_context(support)
            query = self.query_attention(query, support)
        cosine = F.normalize(query, dim=1) @ F.normalize(support, dim=1).T
        attention = torch.softmax(self.similarity_scale * cosine, dim=1)
        one_hot = F.one_hot(task.support_y, int(task.support_y.max()) + 1).to(attention.dtype)
        return torch.log(attention @ one_hot + 1e-12)

    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(prediction, target)

