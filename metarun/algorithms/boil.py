"""BOIL, Body Only update in Inner Loop (Oh, Yoo, Kim & Yun, ICLR 2021, arXiv:2008.08882, Sec. 3).

    body_i' = body - alpha * grad_body L_{T_i}^{support}(head(body(x)))     (inner steps: body only)
    (body, head) <- (body, head) - beta * grad sum_i L_{T_i}^{query}(head(body_i'(x_query)))

MAML whose inner learning rate for the output layer is 0: the meta-learned head stays fixed
inside a task, so adapting must move the features towards the head's rows (representation
change) instead of moving the head onto the features, as ANIL does. The outer loop learns both.
Batch norm, ``algo.task_batching`` and everything else are MAML's.
"""
from __future__ import annotations

from metarun.algorithms.maml import MAML


class BOIL(MAML):
    def step_sizes(self) -> dict[str, float]:
        """alpha for the body, 0 for the head (``inner_sgd`` holds it and takes no gradient for it)."""
        return {name: 0.0 if name.startswith("1.") else self.inner_lr for name, _ in self.model.named_parameters()}
