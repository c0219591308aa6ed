"""Checks a composed config before anything runs, so a bad value fails at once with the key,
the value and what is allowed -- not later as a traceback from deep inside torch."""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Callable

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, ListConfig, OmegaConf

from metarun.algorithms import FIXED_WAYS, SUPPORTED_KINDS, check_supports
from metarun.algorithms.maml import HEADS_BUILT_PER_TASK
from metarun.backbones import BACKBONES
from metarun.backbones.conv4 import DOWNSAMPLING, READOUTS
from metarun.data import DATASETS, EpisodeSource, FewShotImageSource
from metarun.engine.divergence import learning_rate_keys
from metarun.errors import ConfigError
from metarun.rl.references import BANDIT_POLICIES, GYM_POLICIES, NAVIGATION_POLICIES

CONF_DIR = Path(__file__).parent / "conf"
_MISSING = object()
CHOICES = {
    "mode": ("train", "eval"),
    "algo.name": tuple(SUPPORTED_KINDS),
    "algo.optimizer.name": ("adam", "sgd"),
    "algo.scheduler.name": ("constant", "step", "linear", "cosine", "piecewise"),
    "data.name": DATASETS,
    "backbone.name": tuple(BACKBONES),
    "device.name": ("auto", "cpu", "cuda"),
    "eval.checkpoint": ("best", "last"),
    "eval.protocol": ("episodes", "lake_runs"),
    "trainer.precision": ("fp32", "bf16", "auto"),
}
OMNIGLOT_CHOICES = {"data.split": ("vinyals", "lake"),
                    "data.source": ("auto", "embedded", "local", "download"),
                    "data.train_task_classes": ("any", "same_alphabet")}
CONV4_CHOICES = {"backbone.downsample": DOWNSAMPLING, "backbone.readout": READOUTS}
DOWNLOADABLE_CHOICES = {"data.source": ("auto", "local")}
FOLDER_CHOICES = {"data.split": ("auto", "lists", "fractions"), "data.channels": ("auto", 1, 3)}
POSITIVE = ("algo.meta_batch", "trainer.max_steps", "trainer.ckpt_every", "trainer.log_every",
            "trainer.val_episodes", "eval.episodes")
# the episode shape of few-shot data (meta-RL task families have none)
EPISODE_SHAPE = ("data.ways", "data.shots", "data.queries", "algo.episode.ways", "algo.episode.shots",
                 "algo.episode.queries")
POLICY_INITS = ("torch", "xavier")  # a Gaussian policy's linear layers (metarun/algorithms/maml_rl.py)
RL_DATA = {
    "bandits": {"positive": ("data.arms", "data.horizon"), "choices": {"algo.outer_step": ("a2c", "trpo")}},
    "navigation2d": {"positive": ("data.horizon", "data.reference_trajectories", "algo.trajectories"),
                     "choices": {"data.reward": ("distance", "squared_distance"),
                                 "algo.outer_step": ("trpo", "adam"), "algo.policy_init": POLICY_INITS}},
    "gym": {"positive": ("data.reference_trajectories", "algo.trajectories"),
            "choices": {"algo.outer_step": ("trpo", "adam"), "algo.policy_init": POLICY_INITS}},
}
NON_NEGATIVE = ("trainer.val_every",)
# integer keys of single algorithms: (key, smallest allowed value)
ALGO_INTEGERS = {
    **{name: (("algo.inner_steps", 0), ("algo.eval_inner_steps", 0))
       for name in ("maml", "fomaml", "protomaml", "anil", "boil", "metasgd")},
    "mamlpp": (("algo.inner_steps", 1), ("algo.eval_inner_steps", 1)),
    "metanas": (("algo.inner_steps", 1), ("algo.eval_inner_steps", 1), ("algo.inner_batch", 1),
                ("algo.eval_inner_batch", 1), ("algo.search_space.channels", 1), ("algo.search_space.layers", 1),
                ("algo.search_space.nodes", 1), ("algo.search_space.stem_multiplier", 1)),
    "imaml": (("algo.inner_steps", 0), ("algo.eval_inner_steps", 0), ("algo.cg_steps", 1)),
    "snail": (("algo.tc_filters", 1),),
    "mann": (("algo.hidden", 1), ("algo.slots", 1), ("algo.slot_size", 1), ("algo.read_heads", 1)),
    "metalstm": (("algo.inner_steps", 1), ("algo.eval_inner_steps", 1), ("algo.hidden", 1)),
    "reptile": (("algo.inner_steps", 1), ("algo.eval_inner_steps", 1), ("algo.inner_batch", 1),
                ("algo.eval_inner_batch", 1)),
    "matchingnet": (("algo.fce_steps", 1),),
    "relationnet": (("algo.relation_channels", 1), ("algo.relation_hidden", 1)),
    "metaoptnet": (("algo.qp_max_iterations", 1),),
    **{name: (("algo.fine_tune.epochs", 0), ("algo.fine_tune.batch_size", 1))
       for name in ("baseline", "baselinepp")},
}
ALGO_POSITIVE_NUMBERS = {"matchingnet": ("algo.similarity_scale",), "r2d2": ("algo.ridge_init", "algo.scale_init"),
                         "imaml": ("algo.proximal_lambda", "algo.inner_lr"),
                         "metaoptnet": ("algo.svm_c", "algo.kernel_ridge", "algo.scale_init", "algo.qp_tolerance"),
                         "metabaseline": ("algo.temperature_init",),
                         "feat": ("algo.temperature", "algo.temperature2"),
                         "metanas": ("algo.inner_lr", "algo.architecture_lr", "algo.architecture_meta_lr",
                                     "algo.temperature.start", "algo.temperature.end")}
# numbers that may be 0 (finite, not negative)
ALGO_NON_NEGATIVE_NUMBERS = {"imaml": ("algo.eval_proximal_lambda", "algo.cg_damping", "algo.lambda_damping")}
TASK_BATCHING = ("loop", "vmap", "auto")
# learners whose output layer may start every task at zero or from the prototypes
# (algo.head_init), and of those, the ones that then serve any number of ways (Meta-SGD keeps
# learned inner rates for the head, so it has only the zero start, for its trained ways)
HEAD_INIT_LEARNERS = ("maml", "fomaml", "protomaml", "metasgd")
ANY_WAYS_WITH_HEAD_PER_TASK = ("maml", "fomaml", "protomaml")
HEAD_INITS = ("learned", "zero", "prototypes")
ALGO_CHOICES = {"reptile": {"algo.inner_optimizer": ("sgd", "adam"),
                            "algo.inner_optimizer_state": ("carried", "fresh")},
                "anil": {"algo.task_batching": TASK_BATCHING},
                # BOIL holds the head in the inner loop: a head built per task would stay at its start
                "boil": {"algo.task_batching": TASK_BATCHING, "algo.head_init": ("learned",)},
                "imaml": {"algo.head_init": ("learned",), "algo.inner_form": ("proximal", "pull_back")},
                "feat": {"algo.distance": ("euclidean", "cosine")},
                "mamlpp": {"algo.task_batching": TASK_BATCHING, "algo.head_init": ("learned",)},
                **{name: {"algo.task_batching": TASK_BATCHING,
                          "algo.head_init": HEAD_INITS if name in ANY_WAYS_WITH_HEAD_PER_TASK else ("learned", "zero")}
                   for name in HEAD_INIT_LEARNERS}}


def starts_head_at_zero(cfg) -> bool:
    """Whether the run's learner starts its output layer at zero in every task (algo.head_init)."""
    return cfg.algo.name in HEAD_INIT_LEARNERS and cfg.algo.head_init == "zero"


def head_per_task(cfg) -> bool:
    """Whether the run's learner builds its output layer anew for every task (algo.head_init zero
    or prototypes), so that nothing of it is meta-learned."""
    return cfg.algo.name in HEAD_INIT_LEARNERS and cfg.algo.head_init in HEADS_BUILT_PER_TASK


def ways_fixed_by_training(cfg) -> bool:
    """Whether the run's learner has one meta-learned output per way, so that it is tested with
    the ways it was trained with."""
    return cfg.algo.name in FIXED_WAYS and not (cfg.algo.name in ANY_WAYS_WITH_HEAD_PER_TASK and head_per_task(cfg))


def get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_choices(cfg, choices: dict) -> None:
    for key, allowed in choices.items():
        value = get(cfg, key)
        if value not in allowed:
            raise ConfigError(key, value, f"one of {', '.join(str(a) for a in allowed)}" if len(allowed) > 1
                              else f"only {allowed[0]} with algo={cfg.algo.name}")


def check_integers(cfg, keys, minimum: int, context: str = "") -> None:
    """``context``: when the keys are needed, added to the message (``with algo.scheduler.name=step``)."""
    for key in keys:
        value = get(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            word = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(key, value, f"{word} {context}".rstrip())


def is_number(value) -> bool:
    """An int or a float read from YAML or an override, not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_numbers(cfg, keys, context: str = "") -> None:
    for key in keys:
        value = get(cfg, key)
        if not is_number(value) or not 0 < value < math.inf:
            raise ConfigError(key, value, f"a finite positive number {context}".rstrip())


def check_non_negative_numbers(cfg, keys) -> None:
    for key in keys:
        value = get(cfg, key)
        if not is_number(value) or not 0 <= value < math.inf:
            raise ConfigError(key, value, "a finite number >= 0")


def check_eval_inner_lrs(cfg) -> None:
    """``algo.eval_inner_lrs``: null, or one positive step size per test-time inner step."""
    lrs = cfg.algo.get("eval_inner_lrs")
    if lrs is None:
        return
    steps = cfg.algo.eval_inner_steps
    if not OmegaConf.is_list(lrs) or len(lrs) != steps or any(
            not is_number(v) or not 0 < v < math.inf for v in lrs):
        raise ConfigError("algo.eval_inner_lrs", OmegaConf.to_container(lrs) if OmegaConf.is_config(lrs) else lrs,
                          f"null or a list of {steps} positive step sizes (one per algo.eval_inner_steps)")


def check_trust_region(cfg) -> None:
    """TRPO's settings (``algo.trpo``), read by ``metarun/rl/trpo.py``."""
    check_positive_numbers(cfg, ("algo.trpo.max_kl",))
    check_integers(cfg, ("algo.trpo.cg_iterations", "algo.trpo.max_backtracks"), 1)
    ratio, damping = cfg.algo.trpo.backtrack_ratio, cfg.algo.trpo.damping
    if not is_number(ratio) or not 0 < ratio < 1:
        raise ConfigError("algo.trpo.backtrack_ratio", ratio, "a number in (0, 1)")
    if not is_number(damping) or not 0 <= damping < math.inf:
        raise ConfigError("algo.trpo.damping", damping, "a finite number >= 0")
    if cfg.trainer.cuda_graph:
        raise ConfigError("trainer.cuda_graph", True, "false with algo.outer_step=trpo (its line search "
                          "decides on the host whether to take a step)")


# the affine augmentation's ranges: key -> (lowest allowed, the bound it must stay under)
AFFINE_RANGES = {"data.augment.rotate_degrees": (0, 180), "data.augment.shear": (0, 1),
                 "data.augment.scale": (0, 1), "data.augment.translate": (0, 1)}


def check_affine_ranges(cfg) -> None:
    for key, (low, high) in AFFINE_RANGES.items():
        value = get(cfg, key)
        if not is_number(value) or not low <= value < high:
            raise ConfigError(key, value, f"a number in [{low}, {high}) (0: off)")


def check_fit_max_steps(trainer) -> None:
    fraction = trainer.fit_max_steps
    if not is_number(fraction) or not 0 < fraction <= 1:
        raise ConfigError("trainer.fit_max_steps", fraction, "null, or a fraction in (0, 1]")
    if trainer.max_time_s is None:
        raise ConfigError("trainer.fit_max_steps", fraction,
                          "null while trainer.max_time_s is null (it fits the steps to that budget)")
    calibration = trainer.calibration_steps
    if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 2:
        raise ConfigError("trainer.calibration_steps", calibration, "an integer >= 2")


# learners whose update decides on the host from values it computes, which a recorded graph cannot
GRAPH_BREAKING_LEARNERS = {"metaoptnet": "its QP solver stops when the solution is certified",
                           "metabaseline": "its update count chooses the stage",
                           "mamlpp": "its update count sets the multi-step loss's weights and the derivative order",
                           "metanas": "its inner optimisers and architecture steps run from the host"}


def check_cuda_graph(cfg) -> None:
    """What a recorded outer update needs that the config decides (the device and the process
    count are checked where they are known, by the trainer)."""
    check_booleans(cfg, ("trainer.cuda_graph",))
    if not cfg.trainer.cuda_graph:
        return
    if cfg.algo.optimizer.name != "adam":
        raise ConfigError("trainer.cuda_graph", True, f"false with algo.optimizer.name={cfg.algo.optimizer.name} "
                          "(recorded updates use Adam's capturable form; algo.optimizer.name=adam)")
    if cfg.trainer.precision == "bf16":
        raise ConfigError("trainer.cuda_graph", True, "false with trainer.precision=bf16 (autocast's weight "
                          "cache cannot be recorded; trainer.precision=fp32)")
    if cfg.algo.name in GRAPH_BREAKING_LEARNERS:
        raise ConfigError("trainer.cuda_graph", True, f"false with algo={cfg.algo.name} "
                          f"({GRAPH_BREAKING_LEARNERS[cfg.algo.name]})")


# the keys each schedule reads (the others stay null)
SCHEDULER_KEYS = {"constant": (), "step": ("step_size", "gamma"), "linear": ("end_factor", "total_steps"),
                  "cosine": ("total_steps",), "piecewise": ("total_steps", "milestones", "factors")}


def check_scheduler(cfg) -> None:
    scheduler = cfg.algo.scheduler
    needed = f"with algo.scheduler.name={scheduler.name}"
    reads = SCHEDULER_KEYS[scheduler.name]
    check_integers(cfg, [f"algo.scheduler.{k}" for k in ("step_size", "total_steps") if k in reads], 1, needed)
    check_positive_numbers(cfg, [f"algo.scheduler.{k}" for k in ("gamma",) if k in reads], needed)
    if "milestones" in reads:
        check_piecewise(scheduler, needed)
    if "end_factor" in reads or (scheduler.name == "cosine" and scheduler.end_factor is not None):
        value = scheduler.end_factor
        if not is_number(value) or not 0 <= value <= 1:
            raise ConfigError("algo.scheduler.end_factor", value, f"a number in [0, 1] {needed}")


def check_piecewise(scheduler, needed: str) -> None:
    milestones, factors = scheduler.milestones, scheduler.factors
    if not isinstance(milestones, ListConfig) or not milestones or not all(
            is_number(m) and 0 < m < 1 for m in milestones) \
            or list(milestones) != sorted(set(milestones)):
        raise ConfigError("algo.scheduler.milestones", milestones, f"increasing fractions of total_steps in "
                          f"(0, 1), e.g. [0.333, 0.667, 0.833], {needed}")
    if not isinstance(factors, ListConfig) or len(factors) != len(milestones) or not all(
            is_number(f) and 0 < f < math.inf for f in factors):
        raise ConfigError("algo.scheduler.factors", factors, f"one positive factor of the initial rate per "
                          f"milestone ({len(milestones)}), {needed}")


def check_optimizer(cfg) -> None:
    optimizer = cfg.algo.optimizer
    check_booleans(cfg, ("algo.optimizer.nesterov",))
    momentum = optimizer.momentum
    if not is_number(momentum) or not 0 <= momentum < 1:
        raise ConfigError("algo.optimizer.momentum", momentum, "a number in [0, 1)")
    if optimizer.name != "sgd" and (momentum or optimizer.nesterov):
        raise ConfigError("algo.optimizer.momentum" if momentum else "algo.optimizer.nesterov",
                          momentum or optimizer.nesterov, "0 / false with algo.optimizer.name="
                          f"{optimizer.name} (momentum is sgd's; Adam keeps its own moments)")
    if optimizer.nesterov and not momentum:
        raise ConfigError("algo.optimizer.nesterov", True, "false with algo.optimizer.momentum=0 "
                          "(Nesterov's form needs momentum > 0)")
    factors = optimizer.get("lr_factors", {})
    if not isinstance(factors, (DictConfig, dict)):
        raise ConfigError("algo.optimizer.lr_factors", factors, "a mapping of the learner's modules to factors of "
                          "algo.optimizer.lr, e.g. {set_function: 10} ({} : one rate for all)")
    for module, factor in factors.items():
        if not is_number(factor) or not 0 < factor < math.inf:
            raise ConfigError(f"algo.optimizer.lr_factors.{module}", factor, "a positive number (a factor of algo.optimizer.lr)")
    scheduler = cfg.algo.get("scheduler")
    if factors and scheduler is not None and scheduler.name == "cosine" and scheduler.end_factor:
        raise ConfigError("algo.scheduler.end_factor", scheduler.end_factor, "null with algo.optimizer.lr_factors "
                          "(a cosine schedule's floor is one rate for all parameter groups; use name=piecewise or linear)")


def check_booleans(cfg, keys) -> None:
    for key in keys:
        value = get(cfg, key)
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")


def check_fraction(cfg, key: str, meaning: str) -> None:
    value = get(cfg, key)
    if not is_number(value) or not 0 <= value <= 1:
        raise ConfigError(key, value, f"a number in [0, 1]: {meaning}")


def check_mamlpp(cfg) -> None:
    check_fraction(cfg, "algo.multi_step_loss_fraction", "the share of trainer.max_steps with the multi-step "
                   "loss (0: the last step's loss only)")
    check_fraction(cfg, "algo.first_order_fraction", "the share of trainer.max_steps with first-order "
                   "meta-gradients (0: second order throughout)")
    if cfg.algo.eval_inner_steps != cfg.algo.inner_steps:
        raise ConfigError("algo.eval_inner_steps", cfg.algo.eval_inner_steps,
                          f"equal to algo.inner_steps ({cfg.algo.inner_steps}): MAML++ learns an inner rate and "
                          "batch-norm weights for each of its inner steps")


def check_reduction_layers(space, key: str) -> None:
    """The cells that halve the maps of a cell network (MetaNAS's search space at ``key``, or a
    genotype's backbone)."""
    layers = space.layers
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers for i in space.reduction_layers):
        raise ConfigError(f"{key}.reduction_layers", list(space.reduction_layers),
                          f"cell indices in 0..{layers - 1} ({key}.layers={layers})")


def check_folder(cfg) -> None:
    """data=folder: a root, and the split, channel and size keys it reads."""
    if not cfg.data.root:
        raise ConfigError("data.root", cfg.data.root, "the folder of your images (data=folder data.root=DIR): "
                          "DIR/<class>/<image>")
    check_choices(cfg, FOLDER_CHOICES)
    check_integers(cfg, ("data.image_size",), 1)


def check_init_backbone(trainer) -> None:
    """A fresh run that starts from another run's backbone needs that checkpoint now, before any
    data is loaded (a resumed run has the weights in its own checkpoint). A two-stage recipe holds
    a placeholder path until the user names stage 1's checkpoint."""
    path = trainer.init_backbone
    if path is not None and not trainer.resume and not Path(path).expanduser().is_file():
        raise ConfigError("trainer.init_backbone", path, "the path of the checkpoint whose backbone this run "
                          "starts from (<stage-1 run dir>/checkpoints/last.pt): no such file")


def validate_config(cfg) -> None:
    check_choices(cfg, CHOICES)
    check_init_backbone(cfg.trainer)
    check_supports(cfg.algo.name, cfg.data.name, cfg.data.kind)
    if cfg.data.name == "omniglot":
        check_choices(cfg, OMNIGLOT_CHOICES)
    if cfg.data.name in ("cifarfs", "fc100", "cub"):
        check_choices(cfg, DOWNLOADABLE_CHOICES)
    if cfg.data.name == "folder":
        check_folder(cfg)
    check_integers(cfg, POSITIVE, 1)
    if cfg.data.name in RL_DATA:
        check_integers(cfg, RL_DATA[cfg.data.name]["positive"], 1)
        check_choices(cfg, RL_DATA[cfg.data.name]["choices"])
        if cfg.algo.get("outer_step") == "trpo":
            check_trust_region(cfg)
        check_eval_inner_lrs(cfg)
        if cfg.algo.get("eval_trajectories") is not None:
            check_integers(cfg, ("algo.eval_trajectories",), 1)
        if cfg.data.name == "gym" and cfg.data.horizon is not None:
            check_integers(cfg, ("data.horizon",), 1)
        allowed = {"bandits": BANDIT_POLICIES, "navigation2d": NAVIGATION_POLICIES, "gym": GYM_POLICIES}[cfg.data.name]
        for name in cfg.data.references:
            if name not in allowed:
                raise ConfigError("data.references", name, f"names from {', '.join(allowed)}")
    else:
        check_integers(cfg, EPISODE_SHAPE, 1)
    if cfg.data.kind == "image":
        check_integers(cfg, ("data.augment.crop_padding",), 0)
        check_affine_ranges(cfg)
    if cfg.backbone.name == "conv4":
        check_choices(cfg, CONV4_CHOICES)
    if cfg.backbone.name == "resnet12":
        check_integers(cfg, ("backbone.drop_block.size", "backbone.drop_block.anneal_steps"), 1)
        if cfg.backbone.drop_block.size % 2 == 0:
            raise ConfigError("backbone.drop_block.size", cfg.backbone.drop_block.size, "an odd integer")
        if not 0 <= cfg.backbone.drop_block.rate < 1:
            raise ConfigError("backbone.drop_block.rate", cfg.backbone.drop_block.rate, "in [0, 1)")
    if cfg.backbone.name == "wrn28":
        check_integers(cfg, ("backbone.depth", "backbone.widen"), 1)
        if cfg.backbone.depth < 10 or (cfg.backbone.depth - 4) % 6:
            raise ConfigError("backbone.depth", cfg.backbone.depth, "6n + 4 for some n >= 1 (10, 16, 22, 28, 40, ...)")
        if not 0 <= cfg.backbone.dropout < 1:
            raise ConfigError("backbone.dropout", cfg.backbone.dropout, "in [0, 1)")
    check_integers(cfg, NON_NEGATIVE, 0)
    check_positive_numbers(cfg, learning_rate_keys(cfg.algo))
    check_scheduler(cfg)
    if "optimizer" in cfg.algo:
        check_optimizer(cfg)
    if cfg.trainer.max_time_s is not None:
        check_positive_numbers(cfg, ("trainer.max_time_s",))
    if cfg.trainer.fit_max_steps is not None:
        check_fit_max_steps(cfg.trainer)
    for key, minimum in ALGO_INTEGERS.get(cfg.algo.name, ()):
        check_integers(cfg, (key,), minimum)
    check_choices(cfg, ALGO_CHOICES.get(cfg.algo.name, {}))
    check_positive_numbers(cfg, ALGO_POSITIVE_NUMBERS.get(cfg.algo.name, ()))
    check_non_negative_numbers(cfg, ALGO_NON_NEGATIVE_NUMBERS.get(cfg.algo.name, ()))
    if "rotate_support" in cfg.algo:  # ProtoNet, R2-D2, MetaOptNet, Meta-Baseline
        check_booleans(cfg, ("algo.rotate_support",))
    if cfg.algo.name == "metaoptnet":
        smoothing = cfg.algo.label_smoothing
        if not is_number(smoothing) or not 0 <= smoothing <= 0.5:
            raise ConfigError("algo.label_smoothing", smoothing, "a number in [0, 0.5]: the share of each "
                              "target's probability spread over the other classes")
    if cfg.algo.name == "metabaseline":
        check_fraction(cfg, "algo.pretrain_fraction", "the share of trainer.max_steps spent pre-training "
                       "(0: Meta-Baseline's second stage alone)")
    if cfg.algo.name == "mamlpp":
        check_mamlpp(cfg)
    if cfg.algo.name == "metanas":
        check_fraction(cfg, "algo.warm_up_fraction", "the share of trainer.max_steps without architecture adaptation")
        check_fraction(cfg, "algo.prune_threshold", "the operation weight below which test tasks prune it")
    if cfg.algo.name == "metanas":
        check_reduction_layers(cfg.algo.search_space, "algo.search_space")
    elif cfg.backbone.name == "genotype":
        check_reduction_layers(cfg.backbone, "backbone")
        if cfg.backbone.genotype == "random":
            check_integers(cfg, ("backbone.random_nodes",), 1, "(intermediate nodes a cell)")
            check_integers(cfg, ("backbone.random_seed",), -2**63, "(the draw's seed; default: the run's seed)")
    if cfg.algo.name == "feat":
        check_fraction(cfg, "algo.dropout", "the dropout rate of the set function's output")
        if not is_number(cfg.algo.balance) or cfg.algo.balance < 0:
            raise ConfigError("algo.balance", cfg.algo.balance, "a number >= 0: the regulariser's weight (0: none)")
    if cfg.algo.name in ("snail", "mann"):
        check_curriculum(cfg)
    if cfg.algo.name == "mann":
        check_mann(cfg.algo)
        check_booleans(cfg, ("algo.normalize_embedding", "algo.support_loss", "algo.key_strength"))
    if head_per_task(cfg) and cfg.data.kind != "image":
        raise ConfigError("algo.head_init", cfg.algo.head_init, f"learned with data={cfg.data.name} (a head "
                          "started anew each task is for classification, one output per way)")
    if ways_fixed_by_training(cfg) and cfg.data.kind == "image" and cfg.algo.episode.ways != cfg.data.ways:
        also = " (or algo.head_init=zero)" if cfg.algo.name in ANY_WAYS_WITH_HEAD_PER_TASK else ""
        raise ConfigError("algo.episode.ways", cfg.algo.episode.ways,
                          f"equal to data.ways ({cfg.data.ways}){also}: algo={cfg.algo.name} has one output "
                          "unit per way, so it is meta-trained and tested with the same ways")
    if cfg.data.kind not in BACKBONES[cfg.backbone.name]:
        fitting = [b for b, kinds in BACKBONES.items() if cfg.data.kind in kinds]
        raise ConfigError("backbone", cfg.backbone.name,
                          f"data={cfg.data.name} is {cfg.data.kind} data; use backbone="
                          f"{' or backbone='.join(fitting)}")
    threads = cfg.device.threads
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError("device.threads", threads, "auto or a positive integer")
    check_booleans(cfg, ("device.cache_host_memory", "trainer.trust_checkpoint"))
    check_cuda_graph(cfg)
    if cfg.device.name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda", "auto or cpu: no CUDA device is visible to torch here")
    if cfg.eval.protocol == "lake_runs":
        check_lake_runs(cfg)
    if cfg.mode == "eval" and not cfg.trainer.ckpt_path:
        raise ConfigError("trainer.ckpt_path", None, "the checkpoint to evaluate when mode=eval")


def check_curriculum(cfg) -> None:
    start = cfg.algo.curriculum_ways
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or not 2 <= start <= cfg.data.ways):
        raise ConfigError("algo.curriculum_ways", start, f"null or an integer from 2 to data.ways ({cfg.data.ways}): "
                          "the classes of a task at the first update")
    check_fraction(cfg, "algo.curriculum_fraction", "the share of trainer.max_steps over which the curriculum "
                   "adds classes up to data.ways")


def check_mann(algo) -> None:
    if algo.read_heads > algo.slots:
        raise ConfigError("algo.read_heads", algo.read_heads, f"at most algo.slots ({algo.slots}): "
                          "each head writes into a least-used slot of its own")
    if not 0 <= algo.usage_decay <= 1:
        raise ConfigError("algo.usage_decay", algo.usage_decay, "in [0, 1]")


def check_lake_runs(cfg) -> None:
    if cfg.data.name != "omniglot":
        raise ConfigError("eval", "lake_runs", f"data=omniglot: the runs are Omniglot characters, "
                          f"not {cfg.data.name}")
    if cfg.mode == "train" and cfg.data.split != "lake":
        raise ConfigError("data.split", cfg.data.split, "lake with eval=lake_runs: the runs' characters "
                          "come from the evaluation alphabets, which the vinyals split trains on")
    if ways_fixed_by_training(cfg) and cfg.data.ways != 20:
        raise ConfigError("data.ways", cfg.data.ways, f"20 with eval=lake_runs: algo={cfg.algo.name} "
                          "has one output per way and the runs are 20-way")


def smallest_image(backbone_cfg) -> int:
    """The smallest image side an image backbone takes: 2 ** (its 2x2 max-pools)."""
    if backbone_cfg.name in ("wrn28", "genotype") or (backbone_cfg.name == "conv4" and backbone_cfg.downsample == "stride"):
        return 1  # strided convolutions with padding (DARTS cells: ceil halving): any side stays >= 1
    if backbone_cfg.name == "conv4":
        return 2 ** min(backbone_cfg.blocks, backbone_cfg.pooled_blocks)
    return 2 ** len(backbone_cfg.channels)  # resnet12: one pool per block


def config_warnings(cfg) -> list[str]:
    """Settings that are allowed but measured to go wrong: logged at start, the run goes on."""
    warnings = []
    if starts_head_at_zero(cfg) and cfg.algo.eval_inner_steps > cfg.algo.inner_steps:
        warnings.append(f"algo.head_init=zero with algo.eval_inner_steps={cfg.algo.eval_inner_steps} > "
                        f"algo.inner_steps={cfg.algo.inner_steps}: from a zero head, inner steps beyond "
                        "those trained were measured to diverge on some tasks (README, Algorithms); "
                        f"algo.eval_inner_steps={cfg.algo.inner_steps} tests as trained")
    return warnings


def check_episode_shapes(cfg, sources: dict[str, EpisodeSource | None]) -> None:
    """Ways and shots that the split at hand can serve (known only once the data is loaded)."""
    if not isinstance(sources["train"], FewShotImageSource):
        return
    side, smallest = sources["train"].image_shape[-1], smallest_image(cfg.backbone)
    if side < smallest:
        raise ConfigError("backbone", cfg.backbone.name,
                          f"a backbone that takes {side}x{side} images: {cfg.backbone.name} halves them "
                          f"{smallest.bit_length() - 1} times, so needs at least {smallest}x{smallest} "
                          f"(data={cfg.data.name} gives {side}x{side})")
    shapes = {"train": ("algo.episode", cfg.algo.episode), "val": ("data", cfg.data),
              "test": ("data", cfg.data)}
    for split, (prefix, shape) in shapes.items():
        if split == "train" and cfg.mode == "eval":
            continue  # a checkpoint is tested: no meta-training episode is drawn
        source = sources.get(split)
        if not isinstance(source, FewShotImageSource):
            continue
        if shape.ways > source.n_classes:
            raise ConfigError(f"{prefix}.ways", shape.ways,
                              f"at most {source.n_classes}: the {split} split of {cfg.data.name} "
                              f"({cfg.data.get('split', '')}) has {source.n_classes} classes")
        if shape.ways > source.largest_group:
            raise ConfigError(f"{prefix}.ways", shape.ways,
                              f"at most {source.largest_group} with data.train_task_classes="
                              f"{cfg.data.train_task_classes}: the {split} split's largest alphabet "
                              f"has {source.largest_group} classes")
        if shape.shots + shape.queries > source.min_images_per_class:
            needed = shape.shots + shape.queries
            which = "the images of one class"
            if source.class_names is not None:
                small = [n for n, c in zip(source.class_names, source.counts.tolist()) if c < needed]
                which = (f"class {source.class_names[int(source.counts.argmin())]} of the {split} split has "
                         f"{source.min_images_per_class} images ({len(small)} class(es) have fewer than "
                         f"{needed}: add images, or list them in another split)")
            raise ConfigError(f"{prefix}.shots + {prefix}.queries", needed,
                              f"at most {source.min_images_per_class}: {which}")


def is_config_group(key: str) -> bool:
    """Whether ``key`` names a config group of conf/ (``experiment``, ``hparams_search``...)."""
    return (CONF_DIR / key.replace(".", "/")).is_dir()


# mappings whose keys a user names (modules of the learner), each checked where it is used
USER_NAMED_KEYS = ("algo.optimizer.lr_factors",)


def check_added_keys(task_overrides: list[str], compose_without: Callable[[list[str]], DictConfig]) -> None:
    """Refuse ``+key=value`` and ``++key=value`` for a key that conf/ does not declare: Hydra
    suggests the ``+`` when a key is misspelt (``+trainer.max_step=10``), and the run would then
    train with the default it was meant to change. Config groups (``+experiment=...``) are
    Hydra's to check, the keys under ``USER_NAMED_KEYS`` their users'. ``compose_without(overrides)``
    composes the config from other overrides."""
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    adds = [o.type in (OverrideType.ADD, OverrideType.FORCE_ADD) and not is_config_group(o.key_or_group)
            for o in parsed]
    if not any(adds):
        return
    base = compose_without([text for text, add in zip(task_overrides, adds) if not add])
    for override in (o for o, add in zip(parsed, adds) if add):
        key = override.key_or_group
        if OmegaConf.select(base, key, default=_MISSING) is not _MISSING:
            continue  # ++ of a declared key: an ordinary override
        parent_key, _, name = key.rpartition(".")
        if parent_key in USER_NAMED_KEYS:
            continue
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        siblings = [f"{parent_key}.{k}" if parent_key else k for k in parent] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(key, siblings, n=1)
        hint = f"did you mean {close[0]}?" if close else f"{parent_key or 'the config'} declares no such key"
        raise ConfigError(key, override.value(), f"a key that conf/ declares ({hint}); metarun refuses keys "
                          "added with + so that a misspelt key cannot be ignored silently")
