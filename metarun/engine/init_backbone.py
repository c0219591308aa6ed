"""``trainer.init_backbone``: a run that starts from the backbone weights of another run's checkpoint.

The two-stage recipes of the field (FEAT, Meta-Baseline, MetaOptNet on mini-ImageNet) meta-train a
backbone that whole-class classification trained first, each stage with its own optimiser and
schedule. In metarun each stage is a run: the first (e.g. ``algo=baseline``) writes its checkpoint,
the second names it here and takes its backbone, then trains with its own settings. Only a fresh
run loads it; a resumed run continues from its own checkpoint, which holds the weights already.
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from metarun.engine.checkpoint import load_checkpoint
from metarun.errors import ConfigError

log = logging.getLogger("metarun")

# where a learner's state dict keeps its backbone: its own ``backbone`` (the metric, transfer and
# sequence learners), ANIL's ``body``, or the first module of a backbone-and-head ``model`` (the
# rest of MAML's family, Meta-LSTM)
BACKBONE_PREFIXES = ("backbone.", "body.", "model.0.")
KEY = "trainer.init_backbone"


def backbone_of(learner: nn.Module) -> nn.Module | None:
    for name in ("backbone", "body"):
        if isinstance(getattr(learner, name, None), nn.Module):
            return getattr(learner, name)
    model = getattr(learner, "model", None)
    return model[0] if isinstance(model, nn.Sequential) else None


def load_backbone(learner: nn.Module, path: Path, trusted: bool = False) -> None:
    """Copy the backbone weights (and batch-norm statistics) of the checkpoint at ``path``, written
    by any learner on the same backbone settings, into ``learner``'s backbone."""
    if not path.is_file():
        raise ConfigError(KEY, str(path), "the path of a metarun checkpoint (<run dir>/checkpoints/last.pt or "
                          "best.pt): no such file")
    backbone = backbone_of(learner)
    if backbone is None:
        raise ConfigError(KEY, str(path), f"null for {type(learner).__name__}: it keeps no backbone of its own "
                          "to start from")
    wanted = backbone.state_dict()
    parameters = {name for name, _ in backbone.named_parameters()}
    model = load_checkpoint(path, trusted)["model"]
    for prefix in BACKBONE_PREFIXES:
        found = {key[len(prefix):]: value for key, value in model.items() if key.startswith(prefix)}
        if not parameters <= found.keys():
            continue
        taken = {key: found[key] for key in wanted if key in found}
        differing = [key for key in taken if taken[key].shape != wanted[key].shape]
        if differing:
            key = differing[0]
            raise ConfigError(KEY, str(path), f"a checkpoint of the same backbone settings as this run: its "
                              f"{key} has shape {tuple(taken[key].shape)}, this run's {tuple(wanted[key].shape)}")
        backbone.load_state_dict(taken, strict=False)
        # batch norm's running statistics: kept by learners that test with them, not by MAML's
        # family (batch statistics); where the checkpoint has none, this run's start anew
        fresh = [key for key in wanted if key not in taken]
        log.info(f"{KEY}: the backbone starts from {path} ({len(taken)} tensors"
                 + (f"; {len(fresh)} buffers it lacks start anew" if fresh else "") + ")")
        return
    raise ConfigError(KEY, str(path), "a checkpoint of a learner on the same backbone (backbone=... and its "
                      "settings as in this run): its model holds no backbone with this run's parameter names")
