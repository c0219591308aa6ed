"""What a run directory may be trusted to say: one writer at a time, and a saved config that
holds the values the run used, resumes included.

metarun writes ``.hydra/config.yaml`` itself (``hydra.output_subdir`` is null) so that a second
process refused at the lock, or a resume refused for changed settings, leaves the run's record
as it was; Hydra would have overwritten it before metarun's code runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from omegaconf import OmegaConf

from metarun.errors import ConfigError, MetarunError

LOCK_FILE = ".lock"
RESUMES_FILE = "resumes.jsonl"
# settings a resumed run may change: how long and how it trains, where and how it is tested,
# where its files are. The rest (algorithm, backbone, data, seed) define what is trained.
CHANGEABLE_PREFIXES = ("trainer.", "eval.", "device.", "paths.")
CHANGEABLE_KEYS = ("mode", "optimized_metric", "data.root", "data.source", "data.download_url",
                   "data.ways", "data.shots", "data.queries",  # data.{ways,...}: the test episodes' shape
                   "backbone.channels_last", "algo.search_space.channels_last")  # memory layout: the same function
# how a run is continued, not what it does: never listed as a change
CONTINUATION_KEYS = ("trainer.resume", "trainer.ckpt_path")


def unless_random_genotype(now: dict) -> bool:
    """A random genotype's settings were in effect in no run before they existed: a run that
    predates them drew no random cell, so any value of theirs is what it had."""
    return now.get("backbone.genotype") != "random"


def unless_trpo(now: dict) -> bool:
    """TRPO's settings do nothing unless the outer step is TRPO's (RL² had A2C's alone before)."""
    return now.get("algo.outer_step") != "trpo"


# Settings added to the configs after runs had been recorded or checkpointed, each with the value
# those runs had in effect (the behaviour before the key existed), or a predicate of the present
# settings that holds while the key changes nothing. The registry's fingerprint leaves such a
# setting out while it has that value (or its predicate holds), so that adding the key keeps
# recorded runs current (a run that sets another value is a variant of its own); a resume of a
# checkpoint written before the key existed is no change while the key has that value (or, for a
# predicate, while it holds).
SETTINGS_ADDED_LATER = {
    "backbone.downsample": "max_pool",  # 2026-12-07: Conv4's strided form
    "backbone.readout": "flatten",
    "algo.optimizer.momentum": 0.0,  # 2026-12-07: SGD's momentum, Nesterov, the piecewise schedule
    "algo.optimizer.nesterov": False,
    "algo.scheduler.milestones": None,
    "algo.scheduler.factors": None,
    "algo.label_smoothing": 0.0,
    "algo.curriculum_ways": None,  # 2026-12-07: SNAIL's curriculum of ways
    "algo.curriculum_fraction": 0.5,
    "algo.rotate_support": False,  # 2026-12-07: R2-D2's, MetaOptNet's and Meta-Baseline's too
    "trainer.init_backbone": None,  # 2026-12-07: a run that starts from another run's backbone
    "algo.optimizer.lr_factors": {},  # 2026-12-07: a rate of their own for some modules (FEAT's set function)
    "algo.eval_trajectories": None,  # 2026-12-07: the meta-RL test's own number of trajectories
    "backbone.random_seed": unless_random_genotype,  # 2026-12-07: backbone.genotype=random
    "backbone.random_nodes": unless_random_genotype,
    "algo.outer_step": "a2c",  # 2026-12-07: RL² with TRPO's step as well as A2C's
    "algo.policy_init": "torch",  # 2026-12-07: MAML's Gaussian policy may start as the authors' did
    **{f"algo.trpo.{key}": unless_trpo
       for key in ("max_kl", "cg_iterations", "damping", "backtrack_ratio", "max_backtracks")},
}


class RunDirError(MetarunError):
    """The run directory is not this process's to write: another run holds it, or resuming
    would change what the run trained. Nothing of the run directory is touched."""


class EarlierRunError(ConfigError, RunDirError):
    """``hydra.run.dir`` holds an earlier run that a new run may not mix with: a refused key, and
    like every RunDirError, nothing of that directory is touched."""

    def __init__(self, run_dir: Path, earlier: Path):
        super().__init__("hydra.run.dir", str(run_dir), f"a directory without an earlier run (it holds "
                         f"{earlier.relative_to(run_dir)}): continue that run with trainer.resume=true, "
                         "or start this one elsewhere")


class RunDirLock:
    """An exclusive OS lock (``flock``) on ``<run dir>/.lock`` for as long as the run writes
    there. The OS releases it when the process ends, however it ends (SIGKILL included), so a
    stale lock never blocks a resume. The file names the holder, for the error of a second run."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.handle = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirError(f"{self.path.parent} is in use by {holder}: one run writes into a run "
                              "dir at a time; wait for it, or give this run another hydra.run.dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def write_run_config(run_dir: Path, cfg, hydra_cfg=None) -> None:
    """``.hydra/config.yaml`` (the config as the run uses it now) and, when Hydra launched the
    run, ``overrides.yaml`` and ``hydra.yaml``, as Hydra writes them."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if hydra_cfg is not None:
        (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))
        (folder / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))


def flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def changed_settings(saved: dict, current: dict) -> dict[str, tuple[object, object]]:
    """The resolved settings that differ between a checkpoint's config and the present one:
    key -> (saved value, present value); a key missing on one side is None there."""
    before, now = flatten(saved), flatten(current)
    return {key: (before.get(key), now.get(key)) for key in sorted(before.keys() | now.keys())
            if before.get(key) != now.get(key) and key not in CONTINUATION_KEYS and not added_as_it_was(key, before, now)}


def added_as_it_was(key: str, before: dict, now: dict) -> bool:
    """A key the saved config predates, whose present value is what the run had in effect then
    (the value it was added with, or any value a predicate of the present settings allows)."""
    return key not in before and as_before_the_key(key, now)


def as_before_the_key(key: str, now: dict) -> bool:
    """Whether the flat settings ``now`` give ``key`` the behaviour runs had before it existed
    (its value then, or a predicate of ``now`` that holds); false for other keys."""
    if key not in SETTINGS_ADDED_LATER:
        return False
    then = SETTINGS_ADDED_LATER[key]
    return then(now) if callable(then) else now[key] == then


def changeable(key: str) -> bool:
    return key in CHANGEABLE_KEYS or key.startswith(CHANGEABLE_PREFIXES)


def check_resume(checkpoint: Path, saved: dict, current: dict) -> dict[str, tuple[object, object]]:
    """The changes a resume from ``checkpoint`` applies (keys that may change); RunDirError
    listing the others, which would make the saved config claim values the run did not use."""
    changes = changed_settings(saved, current)
    refused = {key: values for key, values in changes.items() if not changeable(key)}
    if refused:
        listed = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} now" for key, (old, new) in refused.items())
        raise RunDirError(f"cannot continue {checkpoint} with other settings of what it trains ({listed}). "
                          f"Resume with the checkpoint's values, or start a new run; only {', '.join(p + '*' for p in CHANGEABLE_PREFIXES)} "
                          f"and {', '.join(CHANGEABLE_KEYS)} may change on a resume")
    return changes


def record_resume(run_dir: Path, checkpoint: Path, step: int, changes: dict[str, tuple[object, object]]) -> None:
    """One line per resume in ``resumes.jsonl``: the step, the checkpoint, what changed."""
    entry = {"step": step, "checkpoint": str(checkpoint),
             "changed": {key: {"before": old, "after": new} for key, (old, new) in changes.items()}}
    with open(run_dir / RESUMES_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
