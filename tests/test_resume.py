"""Checkpoints: atomic writes, and SIGKILL + resume ending at the identical result."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import time

import pytest
import torch

from conftest import HANG_GUARD_S, metarun_command
from metarun.cli import run
from metarun.engine import trainer as trainer_module
from metarun.engine.checkpoint import atomic_save, load_checkpoint
from metarun.errors import ConfigError

SHORT_SINUSOID_RUN = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=1200",
                      "trainer.ckpt_every=50", "trainer.val_every=250", "trainer.val_episodes=20",
                      "trainer.log_every=1", "eval.episodes=50")


def assert_same_parameters(a: dict, b: dict) -> None:
    """Two state dicts hold the same tensors, bit for bit."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def last_logged_step(run_dir) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkill_mid_training_then_resume_gives_identical_parameters(cli, cache_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli(*SHORT_SINUSOID_RUN, f"hydra.run.dir={straight}")

    command, env = metarun_command(cache_dir, *SHORT_SINUSOID_RUN, f"hydra.run.dir={killed}")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + HANG_GUARD_S
    while last_logged_step(killed) < 320 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL: no handler, no cleanup
    process.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    interrupted_at = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    assert 250 <= interrupted_at < 1200

    resumed = cli(*SHORT_SINUSOID_RUN, f"hydra.run.dir={killed}", "trainer.resume=true")
    assert f"resumed from {killed / 'checkpoints' / 'last.pt'} at step {interrupted_at}" in resumed.stdout
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 1200
    assert_same_parameters(a["model"], b["model"])
    for name in ("results.json",):
        ra, rb = (json.loads((d / name).read_text()) for d in (straight, killed))
        assert ra["mean"] == rb["mean"] and ra["ci95"] == rb["ci95"]
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len([s for s in steps if s == 500]) == 2  # train + val record

    again = cli(*SHORT_SINUSOID_RUN, f"hydra.run.dir={killed}", "trainer.resume=true")
    assert "has finished already" in again.stdout  # a finished run is not trained again


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "weights": torch.ones(3)}, path)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resumes_to_the_same_result(cli, cache_dir, tmp_path):
    """A cluster's pre-emption notice (SIGTERM) loses nothing: the step in progress ends, last.pt
    is written at that step (not the last multiple of ckpt_every), the exit status says so."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=1000", "trainer.val_every=0",
           "trainer.log_every=1", "eval.episodes=20",
           "trainer.ckpt_every=1000")  # no periodic checkpoint before the end
    cli(*run, f"hydra.run.dir={straight}")
    command, env = metarun_command(cache_dir, *run, f"hydra.run.dir={stopped}")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + HANG_GUARD_S
    while last_logged_step(stopped) < 60 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert not (stopped / "results.json").exists()
    stopped_at = load_checkpoint(stopped / "checkpoints" / "last.pt")["step"]
    assert 60 <= stopped_at < 1000
    assert f"stopped by SIGTERM at step {stopped_at}" in output and "trainer.resume=true" in output

    cli(*run, f"hydra.run.dir={stopped}", "trainer.resume=true")
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")["model"]
    assert_same_parameters(a, b)


class TickingClock:
    """Stands in for the trainer's ``time`` module: each perf_counter() call is a quarter second
    later than the one before, so every training step lasts exactly 0.25 s."""

    def __init__(self):
        self.ticks = 0

    def perf_counter(self) -> float:
        self.ticks += 1
        return self.ticks * 0.25


def test_time_budget_ends_training_before_it_runs_out_resumes_there_and_repeats_without_the_clock(
        make_cfg, tmp_path, monkeypatch, caplog):
    run_args = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.val_every=0", "trainer.log_every=1000",
                "eval.episodes=20", "algo.scheduler.name=cosine", "algo.scheduler.total_steps=200")
    cut_dir, repeat_dir = tmp_path / "cut", tmp_path / "repeat"
    cut_dir.mkdir(), repeat_dir.mkdir()
    monkeypatch.setattr(trainer_module, "time", TickingClock())
    cut = run(make_cfg(*run_args, "trainer.max_steps=200", "trainer.max_time_s=5.1"), cut_dir)
    monkeypatch.undo()
    # after step 20, 5.0 s are spent and a 21st step of 0.25 s would end past 5.1 s
    assert (cut["step"], cut["wall_time_s"]) == (20, 5.0)
    assert load_checkpoint(cut_dir / "checkpoints" / "last.pt")["step"] == 20
    message = next(r.getMessage() for r in caplog.records if "max_time_s=5.1 reached" in r.getMessage())
    assert "stopped at step 20 of 200" in message
    assert message.endswith("trainer.max_time_s=null trainer.max_steps=20 algo.scheduler.total_steps=200")

    (cut_dir / "results.json").unlink()  # as if killed while testing: resuming trains no further
    resumed = run(make_cfg(*run_args, "trainer.max_steps=200", "trainer.max_time_s=5.1", "trainer.resume=true"),
                  cut_dir)
    assert resumed["step"] == 20 and resumed["mean"] == cut["mean"]

    repeat = run(make_cfg(*run_args, "trainer.max_steps=20"), repeat_dir)  # the log's recipe, real clock
    a = load_checkpoint(cut_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(repeat_dir / "checkpoints" / "last.pt")
    assert_same_parameters(a["model"], b["model"])
    assert a["scheduler"] == b["scheduler"] and repeat["mean"] == cut["mean"]


def test_fitted_max_steps_fill_the_budget_resume_with_it_and_repeat_without_the_clock(
        make_cfg, tmp_path, monkeypatch, caplog):
    run_args = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.val_every=0", "trainer.log_every=1000",
                "eval.episodes=20", "algo.scheduler.name=cosine",
                "algo.scheduler.total_steps=${trainer.max_steps}")
    fitted_dir, repeat_dir = tmp_path / "fitted", tmp_path / "repeat"
    fitted_dir.mkdir(), repeat_dir.mkdir()
    caplog.set_level(logging.INFO, logger="metarun")
    budget = ("trainer.max_steps=1000", "trainer.max_time_s=5.1", "trainer.fit_max_steps=1.0",
              "trainer.calibration_steps=4")
    monkeypatch.setattr(trainer_module, "time", TickingClock())
    fitted = run(make_cfg(*run_args, *budget), fitted_dir)
    monkeypatch.undo()
    # 4 calibration steps of 0.25 s leave 4.1 s: 16 steps, the cosine's whole horizon
    assert (fitted["step"], fitted["wall_time_s"]) == (16, 5.0)
    state = load_checkpoint(fitted_dir / "checkpoints" / "last.pt")
    assert state["step"] == 16 and state["config"]["trainer"]["max_steps"] == 16
    assert state["scheduler"]["T_max"] == 16 and state["optimizer"]["param_groups"][0]["lr"] == 0.0
    message = next(r.getMessage() for r in caplog.records if "trainer.fit_max_steps=1.0:" in r.getMessage())
    assert "so trainer.max_steps=16" in message
    assert message.endswith("trainer.max_time_s=null trainer.max_steps=16 trainer.fit_max_steps=null "
                            "algo.scheduler.total_steps=16")

    (fitted_dir / "results.json").unlink()  # resumed: keeps the fitted 16 steps, no new calibration
    resumed = run(make_cfg(*run_args, *budget, "trainer.resume=true"), fitted_dir)
    assert resumed["step"] == 16 and resumed["mean"] == fitted["mean"]

    # the calibration touched neither the model, nor the optimiser, nor any random stream
    repeat = run(make_cfg(*run_args, "trainer.max_steps=16"), repeat_dir)
    b = load_checkpoint(repeat_dir / "checkpoints" / "last.pt")
    assert_same_parameters(state["model"], b["model"])
    assert state["scheduler"] == b["scheduler"] and repeat["mean"] == fitted["mean"]


def test_a_budget_that_calibration_spends_fails_naming_the_key(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "time", TickingClock())
    with pytest.raises(ConfigError) as error:  # 4 calibration steps of 0.25 s leave nothing of 1 s
        run(make_cfg("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_time_s=1.0",
                     "trainer.fit_max_steps=1.0", "trainer.calibration_steps=4"), tmp_path)
    assert error.value.key == "trainer.max_time_s" and "calibration" in str(error.value)


def test_a_new_run_never_starts_in_a_dir_that_holds_an_earlier_run(make_cfg, tmp_path):
    short = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=20", "trainer.val_every=0",
             "trainer.log_every=5", "eval.episodes=5")
    run(make_cfg(*short), tmp_path)
    def files():  # but the lock, which every attempt takes
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}

    before = files()
    with pytest.raises(ConfigError) as error:  # its curves and results would mix with the earlier run's
        run(make_cfg(*short, "seed=1"), tmp_path)
    assert error.value.key == "hydra.run.dir" and "trainer.resume=true" in str(error.value)
    assert files() == before  # nothing touched
    assert run(make_cfg(*short, "trainer.resume=true"), tmp_path)  # resuming the finished run is fine


def test_the_cli_refusing_a_dir_with_an_earlier_run_leaves_that_run_as_it_was(cli, tmp_path):
    """The CLI writes a failed run's reason into its run dir (error.txt: metarun-compare shows an
    unfinished run with one as failed, for that reason); a refused run dir belongs to the earlier
    run, and the refusal is not its failure."""
    short = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=5", "trainer.val_every=0",
             "eval.episodes=5", f"hydra.run.dir={tmp_path}")
    cli(*short)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}
    refused = cli(*short, "seed=1", check=False)
    assert refused.returncode == 2 and "hydra.run.dir=" in refused.stderr and "trainer.resume=true" in refused.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_run_that_restarts_from_step_0_keeps_no_curve_of_the_attempt_before(make_cfg, tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 5, "train/loss": 9.0}\n')  # killed before a checkpoint
    run(make_cfg("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.max_steps=10", "trainer.val_every=0",
                 "trainer.log_every=5", "eval.episodes=5", "trainer.resume=true"), tmp_path)
    losses = [json.loads(line).get("train/loss") for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 9.0 not in losses and len(losses) == 3  # steps 5 and 10, and the test result


def test_the_fitted_horizon_ignores_a_stray_slow_calibration_step():
    """The calibration's step time is the median past the warm-up: a step that decoded images
    into the cache does not shrink the horizon (the mean would have said 2.0)."""
    from metarun.engine.trainer import expected_step_time
    assert expected_step_time([9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 5.0]) == 1.0
