"""Where and with what code a result was obtained: kept in results.json, so that a recorded
figure (``metarun-results record``) names the machine that trained and tested it."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

from metarun.engine.openmp_wait import openmp_environment

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo; elsewhere what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def code_version() -> dict[str, object]:
    """``git_state`` of the metarun package. Cached: a run asks at its start (``cli.run``), so a
    commit made while it trains is not taken for its code."""
    return git_state(PACKAGE_DIR)


def git_state(package_dir: Path) -> dict[str, object]:
    """The git commit of the checkout that holds ``package_dir``, and whether the package (its
    code and configs) differed from it: changed, deleted or new files under ``package_dir``.
    Files outside it (results, docs) do not make a run dirty: they do not change what it
    computes. Both None where it is not in a git checkout (an installed wheel)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=normal", "--", ".") if commit else None
    return {"git_commit": commit, "git_dirty": bool(changes) if commit else None}


def machine(device: torch.device) -> dict[str, object]:
    return {
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        # the vector instructions torch's kernels and oneDNN's convolutions were allowed (the
        # environment variables ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA lower them, e.g. to AVX2)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "openmp_wait": openmp_environment(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
    }


def environment(device: torch.device) -> dict[str, object]:
    return {**machine(device), **code_version()}
