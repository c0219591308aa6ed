"""Published returns that a meta-RL result is printed next to (cited per entry)."""
from __future__ import annotations

# Duan et al. 2016 (RL²), Table 1: total reward per trial on Bernoulli bandits, by (arms, pulls).
BANDITS = {
    (5, 10): {"RL2": 6.7, "Gittins": 6.6, "UCB1": 6.7, "random": 5.0},
    (5, 100): {"RL2": 78.7, "Gittins": 78.3, "random": 50.0},
    (50, 500): {"RL2": 438.9, "Gittins": 463.7, "random": 250.0},
}
# Finn et al. 2017 (MAML), appendix: 2D navigation average return after 0/1/2/3 policy-gradient
# steps, and a policy that is told the goal (oracle).
NAVIGATION = {"MAML after 0/1/2/3 steps": [-40.4, -11.7, -3.3, -3.2], "oracle": -2.3}


def published_returns(data_cfg) -> dict | None:
    if data_cfg.name == "bandits":
        return BANDITS.get((data_cfg.arms, data_cfg.horizon))
    if data_cfg.name == "navigation2d" and data_cfg.reward == "distance" and data_cfg.horizon == 100:
        return NAVIGATION
    if data_cfg.name == "gym" and data_cfg.env_id == "metarun/Navigation2D-v0" and data_cfg.horizon in (None, 100):
        return NAVIGATION
    return None
