"""Meta-learners by name, with the data kinds each one supports."""
from __future__ import annotations

from metarun.algorithms.base import MetaLearner
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet
from metarun.backbones import build_backbone
from metarun.errors import ConfigError

SUPPORTED_KINDS = {"maml": ("image", "regression"), "protonet": ("image",)}


def build_learner(cfg, kind: str, input_shape: tuple[int, ...]) -> MetaLearner:
    """The learner ``cfg.algo.name`` for data of ``kind`` with inputs of ``input_shape``."""
    name = cfg.algo.name
    if name not in SUPPORTED_KINDS:
        raise ConfigError("algo.name", name, f"one of {', '.join(SUPPORTED_KINDS)}")
    if kind not in SUPPORTED_KINDS[name]:
        raise ConfigError("data", cfg.data.name, f"algo={name} supports data of kind "
                          f"{' or '.join(SUPPORTED_KINDS[name])}; data={cfg.data.name} is {kind}")
    backbone = build_backbone(cfg.backbone, input_shape)
    if name == "maml":
        n_outputs = 1 if kind == "regression" else cfg.data.ways
        return MAML(backbone, n_outputs, kind, cfg.algo)
    return ProtoNet(backbone)


__all__ = ["build_learner", "MetaLearner", "SUPPORTED_KINDS"]
