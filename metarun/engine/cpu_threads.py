"""How many CPU threads one run's torch may use, so that parallel runs share the cores."""
from __future__ import annotations

import os

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher."


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_and_sharers(launcher_cfg) -> tuple[int, int]:
    """The cores this run may use and how many runs share them: joblib's n_jobs runs share the
    machine (a negative n_jobs counts back from the core count, as joblib does); a submitit job
    has its ``cpus_per_task`` to itself."""
    target = launcher_cfg.get("_target_", "") if launcher_cfg is not None else ""
    if target == JOBLIB_LAUNCHER:
        n_jobs = launcher_cfg.get("n_jobs") or 1
        return available_cores(), n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)
    if target.startswith(SUBMITIT_LAUNCHERS) and launcher_cfg.get("cpus_per_task"):
        return launcher_cfg.cpus_per_task, 1
    return available_cores(), 1


def threads_per_run(setting, launcher_cfg, local_processes: int) -> int | None:
    """``device.threads``: a number, or ``auto``: the run's cores divided among the runs and
    torchrun processes sharing them (None when nothing shares them and no launcher sets a
    core count: torch's own default)."""
    if setting != "auto":
        return int(setting)
    cores, runs = cores_and_sharers(launcher_cfg)
    if runs * local_processes == 1 and cores == available_cores():
        return None
    return max(1, cores // (runs * local_processes))
