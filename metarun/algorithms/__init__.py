"""Meta-learners by name, with the data kinds each one supports."""
from __future__ import annotations

from metarun.algorithms.anil import ANIL
from metarun.algorithms.base import MetaLearner
from metarun.algorithms.baseline import Baseline
from metarun.algorithms.boil import BOIL
from metarun.algorithms.feat import FEAT
from metarun.algorithms.imaml import IMAML
from metarun.algorithms.maml import MAML
from metarun.algorithms.mann import MANN
from metarun.algorithms.maml_rl import MAMLPolicyGradient
from metarun.algorithms.mamlpp import MAMLPlusPlus
from metarun.algorithms.matchingnet import MatchingNet
from metarun.algorithms.metabaseline import MetaBaseline
from metarun.algorithms.metalstm import MetaLSTM
from metarun.algorithms.metanas import MetaNAS
from metarun.algorithms.metaoptnet import MetaOptNet
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.protonet import ProtoNet
from metarun.algorithms.r2d2 import R2D2
from metarun.algorithms.relationnet import RelationNet
from metarun.algorithms.reptile import Reptile
from metarun.algorithms.rl2 import RL2
from metarun.algorithms.snail import SNAIL
from metarun.backbones import build_backbone
from metarun.backbones.darts_cells import CellNetwork
from metarun.errors import ConfigError

# learners with a classifier head: one output unit per way (or one regression output)
HEAD_LEARNERS = {"maml": MAML, "fomaml": MAML, "protomaml": MAML, "mamlpp": MAMLPlusPlus, "anil": ANIL,
                 "boil": BOIL, "imaml": IMAML, "metasgd": MetaSGD, "reptile": Reptile}
# learners that compare embeddings (R2-D2, MetaOptNet: fit a classifier to them by solving a
# convex problem): any number of ways, images only
METRIC_LEARNERS = {"protonet": ProtoNet, "matchingnet": MatchingNet, "relationnet": RelationNet, "r2d2": R2D2,
                   "metaoptnet": MetaOptNet, "feat": FEAT}
# pre-train a classifier over the base classes, then fine-tune a new one per test task (Baseline)
# or meta-train a cosine centroid classifier (Meta-Baseline): images only
TRANSFER_LEARNERS = {"baseline": Baseline, "baselinepp": Baseline, "metabaseline": MetaBaseline}
# read a task as a sequence of labelled examples (memory-based): one output unit per way
SEQUENCE_LEARNERS = {"snail": SNAIL, "mann": MANN}
# a learned optimiser updates a classifier with one output per way: images only
OPTIMISER_LEARNERS = {"metalstm": MetaLSTM}
# meta-learns an architecture (a DARTS search network of its own, algo.search_space) with its
# weights, a head with one output per way: images only
ARCHITECTURE_LEARNERS = {"metanas": MetaNAS}
# a recurrent policy that learns within a trial of a meta-RL task family
RECURRENT_POLICY_LEARNERS = {"rl2": RL2}
# learners whose outputs are the ways, so meta-training and testing use the same number of them
FIXED_WAYS = {*HEAD_LEARNERS, *SEQUENCE_LEARNERS, *OPTIMISER_LEARNERS, *ARCHITECTURE_LEARNERS}

SUPPORTED_KINDS = {**{name: ("image", "regression") for name in HEAD_LEARNERS},
                   **{name: ("image",) for name in {**METRIC_LEARNERS, **TRANSFER_LEARNERS,
                                                     **SEQUENCE_LEARNERS, **OPTIMISER_LEARNERS,
                                                     **ARCHITECTURE_LEARNERS}},
                   "rl2": ("bandit",)}
SUPPORTED_KINDS["protomaml"] = ("image",)  # prototypes of classes
# MAML's policy-gradient form (Finn et al. 2017, Sec. 5.3) on the navigation tasks and on
# Gymnasium task families
for name in ("maml", "fomaml"):
    SUPPORTED_KINDS[name] += ("navigation", "gym")


def check_supports(algo: str, data: str, kind: str) -> None:
    """Fail with the allowed kinds when ``algo`` cannot learn from ``data`` (of ``kind``)."""
    if algo not in SUPPORTED_KINDS:
        raise ConfigError("algo.name", algo, f"one of {', '.join(SUPPORTED_KINDS)}")
    if kind not in SUPPORTED_KINDS[algo]:
        raise ConfigError("data", data, f"algo={algo} supports data of kind "
                          f"{' or '.join(SUPPORTED_KINDS[algo])}; data={data} is {kind}")


def build_learner(cfg, kind: str, input_shape: tuple[int, ...], n_train_classes: int | None,
                  action_size: int | None = None) -> MetaLearner:
    """The learner ``cfg.algo.name`` for data of ``kind`` with inputs of ``input_shape``;
    ``n_train_classes`` (classes of the meta-training split) sizes the transfer baselines'
    pre-training classifier; ``action_size``: a meta-RL task family's action dimensions."""
    name = cfg.algo.name
    check_supports(name, cfg.data.name, kind)
    if name == "rl2":
        arms = input_shape[0]
        return RL2(build_backbone(cfg.backbone, (RL2.input_size(arms),)), arms, cfg.algo)
    if name == "metanas":
        space = cfg.algo.search_space
        network = CellNetwork(input_shape[0], space.channels, space.layers, list(space.reduction_layers),
                              space.nodes, space.stem_multiplier, channels_last=space.channels_last)
        return MetaNAS(network, cfg.data.ways, cfg.algo, cfg.trainer)
    backbone = build_backbone(cfg.backbone, input_shape)
    if kind in ("navigation", "gym"):
        return MAMLPolicyGradient(backbone, action_size, kind, cfg.algo)
    if name in HEAD_LEARNERS:
        n_outputs = 1 if kind == "regression" else cfg.data.ways
        if name == "mamlpp":  # its multi-step loss and derivative order follow trainer.max_steps
            return MAMLPlusPlus(backbone, n_outputs, kind, cfg.algo, cfg.trainer)
        return HEAD_LEARNERS[name](backbone, n_outputs, kind, cfg.algo)
    if name in OPTIMISER_LEARNERS:
        return MetaLSTM(backbone, cfg.data.ways, cfg.algo)
    if name == "snail":  # SNAIL's and MANN's curriculum of ways follows trainer.max_steps
        return SNAIL(backbone, cfg.data.ways, cfg.data.shots, cfg.algo, cfg.trainer)
    if name == "mann":
        return MANN(backbone, cfg.data.ways, cfg.algo, cfg.trainer)
    if name == "metabaseline":  # its two stages split trainer.max_steps
        return MetaBaseline(backbone, n_train_classes, cfg.algo, cfg.trainer)
    if name in TRANSFER_LEARNERS:
        return Baseline(backbone, n_train_classes, cfg.algo)
    if name == "protonet":
        return ProtoNet(backbone, cfg.algo.rotate_support)
    return METRIC_LEARNERS[name](backbone, cfg.algo)


__all__ = ["build_learner", "check_supports", "MetaLearner", "SUPPORTED_KINDS", "HEAD_LEARNERS", "METRIC_LEARNERS",
           "FIXED_WAYS"]
