"""Summaries of per-episode scores."""
from __future__ import annotations

import numpy as np


# metrics where a larger value is better (the others, MSE, are errors)
HIGHER_IS_BETTER = ("accuracy", "return")


def scalar_name(metric: str) -> str:
    """The metric's name in TensorBoard scalars and log lines: acc, mse or return."""
    return {"accuracy": "acc"}.get(metric, metric)


def mean_ci95(scores) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval, 1.96 * s / sqrt(n),
    with s the sample standard deviation (the protocol of Finn 2017 and Snell 2017)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        return float(scores.mean()), float("nan")
    return float(scores.mean()), float(1.96 * scores.std(ddof=1) / np.sqrt(len(scores)))


def primary(scores: np.ndarray) -> np.ndarray:
    """The per-episode score a run is judged by: the scores themselves, or for meta-RL, whose
    rows hold the returns after each adaptation stage, the last stage."""
    return scores if scores.ndim == 1 else scores[:, -1]
