"""Returns and advantages of policy-gradient estimators, over [tasks/trajectories, time] tensors."""
from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go sum_{k>=t} gamma^(k-t) r_k along the last dimension."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) along the last dimension; the value
    after the last step is 0 (the trial ends there)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = delta + gamma * lam * running
        advantages[..., t] = running
        next_value = values[..., t]
    return advantages


def linear_feature_baseline(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                            ridge: float = 1e-5) -> torch.Tensor:
    """Value estimates of a linear regression of the returns on time-varying features of the
    observations, refitted to each batch of trajectories (the baseline of Duan et al. 2016b,
    used by MAML's policy-gradient experiments): features (o, o^2, t, t^2, t^3, 1) with t the
    step index / 100. ``observations`` [N, H, D], ``returns`` and ``mask`` [N, H]. Solved in
    float64 by LU (as the reference implementation solves in numpy's float64): in float32 the
    normal equations of these features are so ill-conditioned that ``lstsq`` gave values that
    differed by 10x between two calls on the same data (its result depends on the memory
    alignment), which made runs irreproducible."""
    n, horizon, _ = observations.shape
    time = (torch.arange(horizon, dtype=observations.dtype, device=observations.device) / 100.0)
    time = time.expand(n, horizon).unsqueeze(-1)
    obs = observations.clamp(-10, 10)
    features = torch.cat([obs, obs ** 2, time, time ** 2, time ** 3, torch.ones_like(time)], dim=-1)
    weights = mask.unsqueeze(-1).to(features.dtype)
    design = (features * weights).reshape(-1, features.shape[-1]).double()
    target = (returns * mask).reshape(-1).double()
    gram = design.T @ design
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    for _ in range(5):  # raise the ridge until the system is well posed
        coefficients = torch.linalg.solve(gram + ridge * eye, design.T @ target)
        if torch.isfinite(coefficients).all():
            break
        ridge *= 10
    return (features.double() @ coefficients).to(returns.dtype)


def normalise(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the valid steps (a standard variance reduction)."""
    valid = advantages[mask]
    return (advantages - valid.mean()) / (valid.std(unbiased=False) + 1e-8) * mask
