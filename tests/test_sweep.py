"""Multirun sweeps end with a comparison; failed runs are listed; a killed sweep resumes."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HANG_GUARD_S, metarun_command
from metarun.compare import compare, format_p, paired_p_value
from metarun.engine.stats import mean_ci95

SHORT = ("trainer.val_every=0", "eval.episodes=60", "algo.episode.ways=5", "algo.episode.queries=5")


def sweep_command(cache_dir: Path, sweep_dir: Path, *args: str) -> tuple[list[str], dict]:
    command, env = metarun_command(cache_dir, f"hydra.sweep.dir={sweep_dir}", *args)
    command.insert(command.index("metarun.cli") + 1, "--multirun")  # before the overrides
    return command, env


def sweep(cache_dir: Path, sweep_dir: Path, *args: str, timeout: float = HANG_GUARD_S):
    command, env = sweep_command(cache_dir, sweep_dir, *args)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_multirun_writes_a_comparison_that_matches_the_runs(cache_dir, tmp_path):
    done = sweep(cache_dir, tmp_path, "algo=protonet,matchingnet", "seed=0,1", "trainer.max_steps=30",
                 *SHORT)
    assert done.returncode == 0, done.stderr
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (tmp_path / name).is_file(), name
    rows = {row["algo"]: row for row in read_csv(tmp_path / "comparison.csv")}
    assert set(rows) == {"protonet", "matchingnet"}
    for algo, row in rows.items():
        runs = sorted(tmp_path.glob(f"*_{algo}_omniglot"))
        assert len(runs) == 2 and int(row["seeds"]) == 2
        scores = np.mean([np.load(r / "episode_scores.npy") for r in runs], axis=0)
        mean, ci95 = mean_ci95(scores)
        assert float(row["mean"]) == pytest.approx(mean)
        assert float(row["ci95"]) == pytest.approx(ci95)
        # and each run's own results.json agrees with its episode scores
        rates = []
        for r in runs:
            results = json.loads((r / "results.json").read_text())
            assert results["mean"] == pytest.approx(np.load(r / "episode_scores.npy").mean())
            rates.append(results["step"] * 1 / results["wall_time_s"])  # meta_batch 1
        # tasks/s: meta-training tasks per second of training time, as for every learner
        assert float(row["tasks_per_s"]) == pytest.approx(np.mean(rates))
    best = max(rows.values(), key=lambda row: float(row["mean"]))
    other = next(row for row in rows.values() if row is not best)
    assert best["best"] == "True" and other["best"] == "False"
    assert 0.0 <= float(other["p_vs_best"]) <= 1.0 and int(other["paired_n"]) == 60
    assert "comparison written" in done.stdout


def test_joblib_sweep_over_a_hyper_parameter_gives_a_row_per_value(cache_dir, tmp_path):
    done = sweep(cache_dir, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "algo=protonet", "algo.optimizer.lr=0.0005,0.004", "trainer.max_steps=30", *SHORT)
    assert done.returncode == 0, done.stderr
    rows = {row["algo"]: row for row in read_csv(tmp_path / "comparison.csv")}
    assert set(rows) == {"protonet (algo.optimizer.lr=0.0005)", "protonet (algo.optimizer.lr=0.004)"}
    for run in tmp_path.glob("*_protonet_omniglot"):
        lr = json.loads((run / "results.json").read_text())
        label = f"protonet (algo.optimizer.lr={'0.0005' if run.name.startswith('0_') else '0.004'})"
        assert float(rows[label]["mean"]) == pytest.approx(lr["mean"])
        # two jobs at once share the cores: each run's torch gets its half
        cores = len(os.sched_getaffinity(0))
        assert f"{max(1, cores // 2)} torch CPU thread(s)" in (run / "cli.log").read_text()


def test_submitit_local_sweep(cache_dir, tmp_path):
    done = sweep(cache_dir, tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                 "algo=protonet,matchingnet", "trainer.max_steps=20", *SHORT)
    assert done.returncode == 0, done.stderr
    rows = {row["algo"]: row for row in read_csv(tmp_path / "comparison.csv")}
    assert set(rows) == {"protonet", "matchingnet"}
    for run in tmp_path.glob("*_omniglot"):
        results = json.loads((run / "results.json").read_text())
        assert float(rows[results["algo"]]["mean"]) == pytest.approx(results["mean"])
        assert "1 torch CPU thread(s)" in (run / "cli.log").read_text()


def test_optuna_search_maximises_validation_accuracy(cache_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='needs pip install -e ".[search]"')
    command, env = metarun_command(
        cache_dir, "hparams_search=maml_omniglot", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path}",
        "algo.meta_batch=2", "backbone.channels=16", "trainer.max_steps=20", "trainer.val_every=10",
        "trainer.val_episodes=20", "eval.episodes=20")  # 16 channels: the search is under test, not MAML
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    trials = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*_maml_omniglot/results.json"))]
    assert len(trials) == 3 and all(t["val_best"] is not None for t in trials)
    found = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert found["best_value"] == pytest.approx(max(t["val_best"] for t in trials))
    assert set(found["best_params"]) == {"algo.inner_lr", "algo.optimizer.lr", "algo.inner_steps"}
    assert len(read_csv(tmp_path / "comparison.csv")) == 3  # a row per trial


def test_a_failed_run_is_listed_and_the_sweep_exits_nonzero(cache_dir, tmp_path):
    # 30 queries + 1 shot exceed the 20 drawings of a character: that run fails at start
    done = sweep(cache_dir, tmp_path, "algo=protonet", "data.queries=15,30", "trainer.max_steps=5",
                 *SHORT)
    assert done.returncode == 1
    assert "1 run(s) of the sweep failed" in done.stderr
    statuses = {row["status"] for row in read_csv(tmp_path / "comparison.csv")}
    assert statuses == {"finished", "failed"}
    table = (tmp_path / "comparison.md").read_text()
    assert "Runs without results" in table and "data.shots + data.queries=31 is not allowed" in table
    # metarun-compare gives the same report for the same dir
    assert compare([tmp_path], tmp_path / "again") == table


def test_compare_lists_unfinished_runs(cache_dir, tmp_path):
    done = sweep(cache_dir, tmp_path, "algo=protonet", "seed=0", "trainer.max_steps=5", *SHORT)
    assert done.returncode == 0, done.stderr
    (run,) = tmp_path.glob("0_*")
    (run / "results.json").unlink()
    table = compare([tmp_path], tmp_path)
    assert "No finished runs." in table and "unfinished" in table and "stopped at step 5" in table


def test_a_killed_sweep_resumes_skipping_finished_runs(cache_dir, tmp_path):
    args = ("algo=protonet", "seed=0,1", "trainer.max_steps=100", "trainer.ckpt_every=10", *SHORT)
    command, env = sweep_command(cache_dir, tmp_path, *args)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + HANG_GUARD_S
    try:
        # wait until the first run has finished and the second has written a checkpoint
        while not (list(tmp_path.glob("0_*/results.json")) and list(tmp_path.glob("1_*/checkpoints/last.pt"))):
            assert process.poll() is None and time.time() < deadline, "the sweep ended too early"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not list(tmp_path.glob("1_*/results.json"))
    first_results = next(tmp_path.glob("0_*/results.json")).read_text()

    done = sweep(cache_dir, tmp_path, *args, "trainer.resume=true")
    assert done.returncode == 0, done.stderr
    assert next(tmp_path.glob("0_*/results.json")).read_text() == first_results  # not run again
    log = (next(tmp_path.glob("1_*")) / "cli.log").read_text()
    assert "resumed from" in log
    rows = read_csv(tmp_path / "comparison.csv")
    assert [row["status"] for row in rows] == ["finished"] and rows[0]["seeds"] == "2"


def test_paired_p_value():
    rng = np.random.default_rng(0)
    same = rng.normal(size=500)
    assert paired_p_value(same - same) == 1.0
    assert paired_p_value(rng.normal(0.0, 1.0, 2000)) > 0.01
    assert paired_p_value(rng.normal(0.3, 1.0, 2000)) < 1e-6
    # Student's t, not the normal curve: t = 4.243 with 4 degrees of freedom is p = 0.0132
    # (the normal approximation would say 2.2e-5)
    assert paired_p_value(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(0.013236, abs=1e-6)
    # a difference beyond double precision is reported as such, not as a p of 0
    assert format_p(paired_p_value(rng.normal(5.0, 1.0, 600))) == "< 1e-300"
    assert format_p(0.01234) == "0.0123"
