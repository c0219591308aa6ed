"""Divergence: a non-finite loss or parameter ends a run with an error, never with a result.

A diverged model still produces predictions (argmax of NaN logits picks a class), so without
these checks a run that blew up at step 2 would report chance accuracy as if it had trained.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from omegaconf import DictConfig

from metarun.errors import DivergedError


def learning_rate_keys(algo_cfg, prefix: str = "algo") -> dict[str, object]:
    """Every learning rate and inner step size of an algorithm's config, by its full key:
    the keys named ``lr`` or ending in ``_lr`` (``algo.optimizer.lr``, ``algo.inner_lr``,
    ``algo.fine_tune.lr``...)."""
    found = {}
    for key, value in algo_cfg.items():
        if isinstance(value, (dict, DictConfig)):
            found.update(learning_rate_keys(value, f"{prefix}.{key}"))
        elif key == "lr" or str(key).endswith("_lr"):
            found[f"{prefix}.{key}"] = value
    return found


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor holds finite values only (one read-back for all)."""
    checks = [t.detach().isfinite().all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def check_step_is_finite(step: int, metrics: dict[str, float], learner: torch.nn.Module,
                         algo_cfg, saved_step: int | None) -> None:
    """Raise ``DivergedError`` when outer update ``step`` left a non-finite metric (the loss) or
    a non-finite parameter or buffer. Called before anything of that step is validated or saved,
    so the checkpoints keep the last finite state."""
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if not bad and all_finite([*learner.parameters(), *learner.buffers()]):
        return
    what = (", ".join(f"the training {name} is {metrics[name]}" for name in bad) if bad
            else "the loss is finite but parameters are not")
    rates = ", ".join(f"{key}={value}" for key, value in learning_rate_keys(algo_cfg).items())
    if algo_cfg.get("outer_step") == "trpo":  # the outer step's size is the trust region's, not a rate
        rates += f", algo.trpo.max_kl={algo_cfg.trpo.max_kl}"
    kept = (f"checkpoints/last.pt keeps step {saved_step}" if saved_step is not None
            else "no checkpoint was written")
    raise DivergedError(f"training diverged at step {step}: {what}; no result is reported and {kept} "
                        f"(nothing non-finite is saved). Lower the learning rates ({rates}) or check "
                        "the data")
