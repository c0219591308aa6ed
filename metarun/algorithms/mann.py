"""A memory-augmented neural network with least-recently-used access (MANN; Santoro, Bartunov,
Botvinick, Wierstra & Lillicrap 2016).

A task is read as a sequence in which the label arrives one step late: at step t the network
sees the embedded example x_t with the one-hot label of the example before, y_{t-1}, and
predicts y_t. To answer, it must have bound x_{t-1} to y_{t-1} in its external memory and find
that binding again from a new drawing of the class. Step t, with an LSTM controller, R read
heads and a memory M of S slots of D numbers (Sec. 2.2 and 3.2 of the paper):

    h_t, c_t = LSTM([e(x_t), y_{t-1}, r_{t-1}], (h_{t-1}, c_{t-1}))
    k_t      = tanh(W_k h_t)                                  one key per read head
    w^w_t    = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}     write weights
    M_t      = M_{t-1}, its least-used slot (by w^u_{t-1}) zeroed, + sum_heads w^w_t k_t^T
    w^r_t    = softmax_i cos(k_t, M_t(i)),   r_t = sum_i w^r_t(i) M_t(i)      read
    w^u_t    = gamma w^u_{t-1} + sum_heads (w^r_t + w^w_t)                    usage
    w^lu_t   = the R least-used slots of w^u_t
    logits_t = W_o [h_t, r_t]

alpha is one learned scalar per head. The paper's w^lu_t marks all R least-used slots; here head
j writes into the j-th of them, so that the heads never add their keys to the same slot.

The paper fed raw pixels; metarun embeds each image with the backbone, learned jointly. While
the memory is still useless (the long stretch at chance before the binding appears), nothing
rewards an informative embedding, and the network learns to silence its input instead: in a
measured Omniglot run every feature of the Conv4 embedding was exactly zero (dead ReLUs) by update
1,300, and the run stayed at chance. ``algo.normalize_embedding`` standardises each embedding
across its features (layer norm without a learned scale), so it cannot shrink away and the
features' common direction (cosine 0.9-0.95 between untrained embeddings of different
characters) is removed; with it the same run left chance within 1,000 updates.

The step size matters for how long the plateau lasts: Adam 3e-3 left it after 750 to 1,500
updates of 16 Omniglot tasks in two runs (32-channel embedding), 1e-3 was still at chance after 1,250; on
synthetic tasks with perfect features, 1,000 against 1,500 updates. So 3e-3 is the default.

In metarun's episodes the support examples form the sequence (in a random order while
meta-training, a fixed one at test); each query then continues it by one step, from the state
after the support set and with the last support label as its late label, so no query sees
another (non-transductive). Meta-training scores the query predictions and, as the paper
trains every step of the sequence, the support predictions too (``algo.support_loss``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.base import MetaLearner, Metrics
from metarun.algorithms.sequence import WaysCurriculum, embed_tasks, in_reading_order
from metarun.tasks import Task, TaskBatch

# keeps the cosine similarity of an all-zero (empty) memory slot finite
NORM_EPS = 1e-8


class LRUAMemory(nn.Module):
    """The memory state of a batch of sequences and the paper's read/write rules over it."""

    def __init__(self, hidden: int, slots: int, slot_size: int, heads: int, usage_decay: float,
                 key_strength: bool):
        super().__init__()
        self.slots, self.slot_size, self.heads, self.usage_decay = slots, slot_size, heads, usage_decay
        self.key = nn.Linear(hidden, heads * slot_size)
        self.strength = nn.Linear(hidden, heads) if key_strength else None
        self.write_gate = nn.Parameter(torch.zeros(heads))  # alpha, one per head

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
        zeros = lambda *shape: torch.zeros(batch, *shape, device=device, dtype=dtype)
        usage = zeros(self.slots)
        return {"memory": zeros(self.slots, self.slot_size), "read_weights": zeros(self.heads, self.slots),
                "usage": usage, "least_used": self.least_used(usage),
                "reads": zeros(self.heads * self.slot_size)}

    def least_used(self, usage: torch.Tensor) -> torch.Tensor:
        """One-hot rows (batch x heads x slots): head j's row marks the j-th least-used slot;
        ties go to the lower slot index (a stable sort), so an empty memory fills in order."""
        order = usage.argsort(dim=-1, stable=True)[:, :self.heads]
        return F.one_hot(order, self.slots).to(usage.dtype)

    def forward(self, hidden: torch.Tensor, state: dict) -> dict:
        batch = hidden.shape[0]
        keys = torch.tanh(self.key(hidden)).view(batch, self.heads, self.slot_size)
        gate = torch.sigmoid(self.write_gate).view(1, self.heads, 1)
        write_weights = gate * state["read_weights"] + (1 - gate) * state["least_used"]
        # the least-used slot of the previous step is emptied before the write
        emptied = 1 - state["least_used"][:, 0]
        memory = state["memory"] * emptied.unsqueeze(-1) + write_weights.transpose(1, 2) @ keys
        similarity = F.normalize(keys, dim=-1, eps=NORM_EPS) @ F.normalize(memory, dim=-1, eps=NORM_EPS).transpose(1, 2)
        if self.strength is not None:
            similarity = similarity * (1 + F.softplus(self.strength(hidden))).unsqueeze(-1)
        read_weights = similarity.softmax(dim=-1)
        reads = (read_weights @ memory).flatten(1)
        usage = self.usage_decay * state["usage"] + (read_weights + write_weights).sum(dim=1)
        return {"memory": memory, "read_weights": read_weights, "usage": usage,
                "least_used": self.least_used(usage), "reads": reads}


class MANN(WaysCurriculum, MetaLearner):
    def __init__(self, backbone: nn.Module, ways: int, cfg, trainer_cfg):
        super().__init__("image")
        self.backbone = backbone
        self.ways = ways
        self.init_curriculum(cfg, trainer_cfg)
        self.support_loss = cfg.support_loss
        self.normalize_embedding = cfg.normalize_embedding
        reads = cfg.read_heads * cfg.slot_size
        self.controller = nn.LSTMCell(backbone.out_features + ways + reads, cfg.hidden)
        self.memory = LRUAMemory(cfg.hidden, cfg.slots, cfg.slot_size, cfg.read_heads, cfg.usage_decay,
                                   cfg.key_strength)
        self.classify = nn.Linear(cfg.hidden + reads, ways)

    def step(self, features: torch.Tensor, late_label: torch.Tensor, state: dict):
        """One step for a batch of sequences (``late_label``: one-hot rows, all zero before the
        first label): the logits for y_t and the next state."""
        h, c = self.controller(torch.cat([features, late_label, state["memory"]["reads"]], dim=1),
                               (state["h"], state["c"]))
        memory = self.memory(h, state["memory"])
        return self.classify(torch.cat([h, memory["reads"]], dim=1)), {"h": h, "c": c, "memory": memory}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return F.layer_norm(features, features.shape[-1:]) if self.normalize_embedding else features

    def read_sequences(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor):
        """Embedded tasks of one shape (leading dimension: the task) read as one batch of
        sequences: the support logits (each before its label is shown) in reading order, that
        order's labels, and the query logits. The embedding sees all tasks' images in one batch
        (``embed_tasks``). Task by task (30 images of 5 classes), the network came to rely on
        per-task batch-norm statistics: 58.9% on validation episodes normalised that way, 46.2%
        with the running averages; with the whole batch, 59.4% / 59.0%."""
        (n_tasks, n_support), n_query = support_y.shape, query.shape[1]
        support, labels = in_reading_order(support, support_y, self.training)
        late_labels = F.one_hot(labels, self.ways).to(support.dtype)
        hidden = self.controller.hidden_size
        state = {"h": support.new_zeros(n_tasks, hidden), "c": support.new_zeros(n_tasks, hidden),
                 "memory": self.memory.initial_state(n_tasks, support.device, support.dtype)}
        late = support.new_zeros(n_tasks, self.ways)  # no label before the first example
        support_logits = []
        for t in range(n_support):
            logits, state = self.step(support[:, t], late, state)
            support_logits.append(logits)
            late = late_labels[:, t]
        # every query continues its task's sequence from the same state, one step each
        branch = lambda v: v.repeat_interleave(n_query, dim=0)
        branched = {"h": branch(state["h"]), "c": branch(state["c"]),
                    "memory": {k: branch(v) for k, v in state["memory"].items()}}
        query_logits, _ = self.step(query.flatten(0, 1), branch(late), branched)
        return torch.stack(support_logits, dim=1), labels, query_logits.view(n_tasks, n_query, -1)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        support, query = embed_tasks(self.embed, task.support_x[None], task.query_x[None])
        return self.read_sequences(support, task.support_y[None], query)[2][0]

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        """As SNAIL's: the meta-batch embedded as one batch, then cut to the curriculum's ways
        (``algo.curriculum_ways``, metarun's; see snail.py), at the same cost all through the run."""
        support, query = embed_tasks(self.embed, batch.support_x, batch.query_x)
        tasks = self.curriculum_step(TaskBatch(support, batch.support_y, query, batch.query_y))
        support_logits, support_labels, query_logits = self.read_sequences(tasks.support_x, tasks.support_y,
                                                                           tasks.query_x)
        loss = self.task_loss(query_logits.flatten(0, 1), tasks.query_y.flatten())
        if self.support_loss:
            loss = loss + self.task_loss(support_logits.flatten(0, 1), support_labels.flatten())
        loss.backward()
        return self.task_metrics(query_logits.detach().flatten(0, 1), tasks.query_y.flatten())
