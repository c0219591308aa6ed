"""Shared fixtures. Tests that need the real Omniglot files read them from METARUN_DATA_DIR
(a folder whose omniglot/ holds the upstream zips); .ci/run points it at ../shared/data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the build scripts under test


def pin_xdist_worker_to_its_cores() -> None:
    """Under ``pytest -n N`` (pytest-xdist) each worker, and every process it starts, keeps to its
    own share of the cores: OpenMP threads of two workers on the same cores spin against each
    other (several times slower, see docs/performance.md). The affinity is set before torch loads,
    so its default thread count is the share's size."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // workers)
    first = (int(worker.removeprefix("gw")) * share) % len(cores)
    os.sched_setaffinity(0, set(cores[first:first + share]))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(share)


pin_xdist_worker_to_its_cores()

DATA_DIR = os.environ.get("METARUN_DATA_DIR")
# how long a subprocess of a test may take before it is taken for hung: a guard, never a speed
# check, so an hour, which a shared CI machine ten times slower than this one stays far below
HANG_GUARD_S = 3600
needs_omniglot_files = pytest.mark.skipif(
    not DATA_DIR or not (Path(DATA_DIR) / "omniglot").is_dir(),
    reason="METARUN_DATA_DIR does not hold omniglot/ (CI sets it to ../shared/data)")


def parameters_batch_norm_leaves_free(module) -> list:
    """The parameters of ``module`` less every convolution bias that a batch norm right after it
    cancels: subtracting the batch mean removes any per-channel constant, so that bias's gradient
    is zero in exact arithmetic (and exactly zero where Conv4 folds its first batch norm into the
    convolution). A test that every parameter learns means these."""
    from torch import nn

    from metarun.backbones.conv4 import normalises_with_batch_statistics
    cancelled = set()
    for parent in module.modules():
        children = list(parent.children())
        for layer, following in zip(children, children[1:]):
            if (isinstance(layer, nn.Conv2d) and layer.bias is not None
                    and normalises_with_batch_statistics(following)):
                cancelled.add(id(layer.bias))
    return [p for p in module.parameters() if id(p) not in cancelled]


@pytest.fixture(scope="session", autouse=True)
def output_dir(tmp_path_factory) -> Path:
    """Where runs go that a test does not place itself (METARUN_OUTPUT_DIR, read by
    paths.output_dir, in this process and the CLI processes it starts): never the project's outputs/."""
    path = tmp_path_factory.mktemp("outputs")
    os.environ["METARUN_OUTPUT_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decoded-image cache for the whole session, never the user's own."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(cache_dir, tmp_path):
    """Compose the real conf/ with overrides, as the CLI would."""
    def _make(*overrides: str):
        with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
            return compose(config_name="config", overrides=[
                f"paths.cache_dir={cache_dir}", f"paths.output_dir={tmp_path}",
                "trainer.progress=false", *overrides])
    return _make


def metarun_command(cache_dir: Path, *args: str) -> tuple[list[str], dict]:
    """The command line and environment of the metarun CLI in a fresh process."""
    env = {**os.environ, "METARUN_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "metarun.cli", "trainer.progress=false", *args], env


@pytest.fixture
def cli(cache_dir):
    """Run the CLI in a fresh process; returns the CompletedProcess."""
    def _run(*args: str, timeout: float = HANG_GUARD_S, check: bool = True):
        command, env = metarun_command(cache_dir, *args)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"metarun {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done
    return _run


def short_protonet_run(cli, run_dir: Path, *overrides: str) -> dict:
    """ProtoNet for 20 steps (3-way training, 2-way test episodes: chance 50%) on a data set given
    by ``overrides``, usually small files in its real format; returns its results.json."""
    cli("algo=protonet", *overrides, "data.ways=2", "algo.episode.ways=3", "trainer.max_steps=20",
        "trainer.val_every=10", "trainer.val_episodes=5", "eval.episodes=20", f"hydra.run.dir={run_dir}")
    return json.loads((run_dir / "results.json").read_text())
