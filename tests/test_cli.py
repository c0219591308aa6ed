"""The CLI end to end: what a run writes, and evaluating a saved checkpoint."""
from __future__ import annotations

import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarun.engine.checkpoint import load_checkpoint


def test_run_writes_everything_and_eval_mode_reproduces_the_test_score(cli, tmp_path):
    done = cli("algo=protonet", "algo.episode.ways=10", "trainer.max_steps=30", "trainer.val_every=15",
               "trainer.val_episodes=20", "trainer.ckpt_every=10", "eval.episodes=50",
               f"paths.output_dir={tmp_path / 'runs'}")
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert run_dir.name.endswith("_protonet_omniglot")
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "test accuracy (protonet, omniglot 5-way 1-shot, 50 episodes)" in done.stdout
    assert "(95% CI)" in done.stdout

    results = json.loads((run_dir / "results.json").read_text())
    assert results["metric"] == "accuracy" and results["n_episodes"] == 50
    assert 0.2 < results["mean"] <= 1.0 and results["ci95"] > 0
    assert results["params"] == 111_936  # Conv4: 4 x (conv + batch norm), 64 channels
    assert results["wall_time_s"] > 0 and results["split"] == "vinyals"
    scores = np.load(run_dir / "episode_scores.npy")
    assert len(scores) == 50 and np.isclose(scores.mean(), results["mean"])

    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scheduler", "step", "rng", "config"} <= set(last)
    assert last["step"] == 30 and last["config"]["algo"]["name"] == "protonet"
    assert (run_dir / "checkpoints" / "best.pt").is_file()

    (event_dir,) = {p.parent for p in (run_dir / "tb").glob("events.out.tfevents.*")}
    events = EventAccumulator(str(event_dir))
    events.Reload()
    assert {"train/loss", "train/acc", "val/acc", "lr", "perf/tasks_per_s", "test/acc"} <= set(events.Tags()["scalars"])
    # the run's row of TensorBoard's HPARAMS table: its settings and its test score
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    session = hparams["_hparams_/session_start_info"]
    assert b"algo.name" in session and b"protonet" in session and b"data.shots" in session
    assert b"test/acc" in hparams["_hparams_/experiment"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/acc" in r] == [15, 30]

    again = cli("mode=eval", "algo=protonet", f"trainer.ckpt_path={run_dir / 'checkpoints' / 'best.pt'}",
                "eval.episodes=50", f"paths.output_dir={tmp_path / 'eval'}")
    (eval_dir,) = (tmp_path / "eval").glob("*/*")
    evaluated = json.loads((eval_dir / "results.json").read_text())
    assert evaluated["mean"] == results["mean"]
    # the training time that the checkpoint holds, not the 0 s of this process
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert evaluated["wall_time_s"] == best["train_time"] > 0
    assert "test accuracy" in again.stdout

    wrong = cli("mode=eval", "algo=maml", f"trainer.ckpt_path={run_dir / 'checkpoints' / 'best.pt'}",
                check=False)
    assert wrong.returncode == 2 and "protonet, the algo that" in wrong.stderr


def test_help_says_what_metarun_does_before_the_config_dump(cli):
    done = cli("--help")
    text = done.stdout
    assert text.startswith("metarun: a config-driven experiment runner for meta-learning")
    assert "metarun algo=protonet data=omniglot" in text and "metarun -m algo=maml,protonet" in text
    assert "Where runs go: outputs/<date>/<time>_<algo>_<data>/" in text
    assert "algo: anil, baseline, baselinepp, boil, feat, fomaml, imaml, maml, mamlpp" in text  # every group's options
    assert text.index("Examples") < text.index("The default config:") < text.index("inner_lr: 0.4")
