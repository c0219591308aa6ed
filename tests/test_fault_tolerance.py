"""A run that cannot lie: divergence, resumes with changed settings, two writers, unsafe
checkpoints, misspelt keys, damaged archives and replaced caches."""
from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA_DIR, needs_omniglot_files
from metarun.cli import run
from metarun.config_check import validate_config
from metarun.data.cache import cached_arrays
from metarun.data.omniglot import load_cached
from metarun.data_check import check
from metarun.engine.checkpoint import atomic_save, load_checkpoint
from metarun.engine.divergence import all_finite
from metarun.engine.run_dir import RunDirError, RunDirLock, check_resume
from metarun.errors import ConfigError, DataError, MetarunError
from test_resume import assert_same_parameters

SINUSOID = ("algo=maml", "data=sinusoid", "backbone=mlp", "trainer.val_every=0", "eval.episodes=20",
            "trainer.log_every=1")


def test_a_diverged_run_is_an_error_with_the_last_finite_checkpoint_kept(cli, tmp_path):
    run_dir = tmp_path / "run"
    done = cli(*SINUSOID, "trainer.max_steps=50", "trainer.ckpt_every=1", "algo.optimizer.lr=1e30",
               f"hydra.run.dir={run_dir}", check=False)
    # step 1 moves the weights by 1e30 (still finite), step 2's loss overflows
    assert done.returncode == 2
    assert "training diverged at step 2: the training loss is" in done.stderr
    assert "algo.optimizer.lr=1e+30" in done.stderr and "checkpoints/last.pt keeps step 1" in done.stderr
    assert not (run_dir / "results.json").exists() and (run_dir / "error.txt").exists()
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] == 1 and all_finite(last["model"].values())


def test_no_test_score_is_computed_from_a_non_finite_checkpoint(cli, tmp_path):
    run_dir = tmp_path / "run"
    cli(*SINUSOID, "trainer.max_steps=5", f"hydra.run.dir={run_dir}")
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    next(iter(state["model"].values())).view(-1)[0] = float("nan")
    poisoned = tmp_path / "nan.pt"
    atomic_save(state, poisoned)
    done = cli("mode=eval", *SINUSOID, f"trainer.ckpt_path={poisoned}", f"hydra.run.dir={tmp_path / 'eval'}",
               check=False)
    assert done.returncode == 2 and "holds non-finite parameters (step 5)" in done.stderr
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.parametrize("override, key", [
    ("algo.inner_lr=nan", "algo.inner_lr"), ("algo.inner_lr=inf", "algo.inner_lr"),
    ("algo.optimizer.lr=0", "algo.optimizer.lr"), ("algo.optimizer.lr=-0.001", "algo.optimizer.lr"),
])
def test_learning_rates_must_be_finite_and_positive_at_start(make_cfg, override, key):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*SINUSOID, override))
    assert error.value.key == key and "a finite positive number" in str(error.value)


def test_resuming_with_other_settings_of_what_is_trained_is_refused_and_touches_nothing(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run(make_cfg(*SINUSOID, "trainer.max_steps=10"), run_dir)
    before = {p: p.read_bytes() for p in (run_dir / ".hydra" / "config.yaml", run_dir / "checkpoints" / "last.pt",
                                          run_dir / "results.json")}
    with pytest.raises(RunDirError, match=r"algo.inner_lr: 0.01 in the checkpoint, 1e\+30 now"):
        run(make_cfg(*SINUSOID, "trainer.max_steps=10", "trainer.resume=true", "algo.inner_lr=1e30"), run_dir)
    with pytest.raises(RunDirError) as error:
        run(make_cfg(*SINUSOID, "trainer.max_steps=20", "trainer.resume=true", "algo.inner_steps=2", "seed=1"),
            run_dir)
    message = str(error.value)
    assert "algo.inner_steps: 1 in the checkpoint, 2 now" in message and "seed: 0 in the checkpoint, 1 now" in message
    assert "trainer.max_steps" not in message  # a setting that may change is not refused
    assert {p: p.read_bytes() for p in before} == before
    assert not (run_dir / "resumes.jsonl").exists()

    # trainer.ckpt_path into a new run dir: the same check (the override was ignored before)
    with pytest.raises(RunDirError, match=r"algo.optimizer.lr: 0.001 in the checkpoint, 1e\+30 now"):
        run(make_cfg(*SINUSOID, f"trainer.ckpt_path={run_dir / 'checkpoints' / 'last.pt'}",
                     "algo.optimizer.lr=1e30"), tmp_path / "other")



def test_a_checkpoint_older_than_a_setting_resumes_while_the_setting_keeps_the_behaviour_it_had(tmp_path):
    """A checkpoint written before metarun had a key (algo.optimizer.lr_factors, algo.curriculum_ways,
    RL²'s algo.outer_step) resumes under the key's default, the behaviour the run had; another value
    is a change (keys that only matter with another value, a random cell's or TRPO's, may be anything)."""
    saved = {"algo": {"name": "snail", "optimizer": {"lr": 0.001}}}
    now = {"algo": {"name": "snail", "optimizer": {"lr": 0.001, "lr_factors": {}}, "curriculum_ways": None}}
    assert check_resume(tmp_path / "last.pt", saved, now) == {}
    now["algo"]["curriculum_ways"] = 5
    with pytest.raises(RunDirError, match="algo.curriculum_ways: None in the checkpoint, 5 now"):
        check_resume(tmp_path / "last.pt", saved, now)
    genotype_run = {"backbone": {"name": "genotype", "genotype": "found.json"}}
    assert check_resume(tmp_path / "last.pt", genotype_run,
                        {"backbone": {**genotype_run["backbone"], "random_seed": 3, "random_nodes": 3}}) == {}
    with pytest.raises(RunDirError, match="backbone.genotype: 'found.json' in the checkpoint, 'random' now"):
        check_resume(tmp_path / "last.pt", genotype_run,
                     {"backbone": {"name": "genotype", "genotype": "random", "random_seed": 3, "random_nodes": 3}})
    # RL² before it had TRPO's step: A2C's, whatever TRPO's settings say
    trpo = {"max_kl": 0.01, "cg_iterations": 10, "damping": 1e-5, "backtrack_ratio": 0.8, "max_backtracks": 15}
    rl2_run = {"algo": {"name": "rl2", "gamma": 0.99}}
    assert check_resume(tmp_path / "last.pt", rl2_run,
                        {"algo": {**rl2_run["algo"], "outer_step": "a2c", "trpo": trpo}}) == {}
    with pytest.raises(RunDirError, match="algo.outer_step: None in the checkpoint, 'trpo' now"):
        check_resume(tmp_path / "last.pt", rl2_run, {"algo": {**rl2_run["algo"], "outer_step": "trpo", "trpo": trpo}})


def test_a_finished_run_continued_with_more_steps_trains_on_and_records_the_change(make_cfg, tmp_path):
    straight, continued = tmp_path / "straight", tmp_path / "continued"
    run(make_cfg(*SINUSOID, "trainer.max_steps=40"), straight)
    run(make_cfg(*SINUSOID, "trainer.max_steps=20"), continued)
    recorded = (continued / ".hydra" / "config.yaml").read_text()
    finished = run(make_cfg(*SINUSOID, "trainer.max_steps=20", "trainer.resume=true", "eval.episodes=30"),
                   continued)
    # nothing to do: the old results, and a record that claims no setting it did not use
    assert finished["step"] == 20 and finished["n_episodes"] == 20
    assert not (continued / "resumes.jsonl").exists()
    assert (continued / ".hydra" / "config.yaml").read_text() == recorded

    result = run(make_cfg(*SINUSOID, "trainer.max_steps=40", "trainer.resume=true"), continued)
    assert result["step"] == 40
    assert_same_parameters(load_checkpoint(straight / "checkpoints" / "last.pt")["model"],
                           load_checkpoint(continued / "checkpoints" / "last.pt")["model"])
    (record,) = [json.loads(line) for line in (continued / "resumes.jsonl").read_text().splitlines()]
    assert record["step"] == 20 and record["changed"] == {"trainer.max_steps": {"before": 20, "after": 40}}
    assert "max_steps: 40" in (continued / ".hydra" / "config.yaml").read_text()


def test_a_second_run_into_a_held_run_dir_stops_at_once_and_writes_nothing(cli, tmp_path):
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir):
        done = cli(*SINUSOID, "trainer.max_steps=5", f"hydra.run.dir={run_dir}", check=False)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"metarun: error: {run_dir} is in use by pid ") and "another hydra.run.dir" in line
    # no config, error.txt or log line of its own (Hydra opens the log file, in append mode)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "cli.log"]
    assert (run_dir / "cli.log").read_text() == ""
    cli(*SINUSOID, "trainer.max_steps=5", f"hydra.run.dir={run_dir}")  # free again once the holder ends


def test_checkpoints_load_with_weights_only_and_untrusted_pickles_are_refused(cli, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cli(*SINUSOID, "trainer.max_steps=5", f"hydra.run.dir={run_dir}")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 5 and state["rng"]["numpy"]["bit_generator"] == "MT19937"

    # a checkpoint of an older metarun: NumPy's RNG state pickled as a tuple with an array
    old = tmp_path / "old.pt"
    torch.save({**state, "rng": {**state["rng"], "numpy": np.random.get_state()}}, old)
    with pytest.raises(MetarunError, match="trainer.trust_checkpoint=true"):
        load_checkpoint(old)
    assert load_checkpoint(old, trusted=True)["step"] == 5

    # a file that would run code when unpickled: refused, and the code does not run
    ran = []
    monkeypatch.setattr(np, "metarun_test_payload", ran.append, raising=False)

    class Payload:
        def __reduce__(self):
            return np.metarun_test_payload, ("ran",)

    hostile = tmp_path / "hostile.pt"
    torch.save({"model": {}, "payload": Payload()}, hostile)
    with pytest.raises(MetarunError, match="cannot be loaded safely"):
        load_checkpoint(hostile)
    assert ran == []


@pytest.mark.parametrize("override, message", [
    ("+trainer.max_step=10", "trainer.max_step=10 is not allowed: a key that conf/ declares (did you mean "
                             "trainer.max_steps?)"),
    ("++algo.inner_lrr=0.1", "algo.inner_lrr=0.1 is not allowed: a key that conf/ declares (did you mean "
                             "algo.inner_lr?)"),
])
def test_keys_added_with_plus_that_conf_does_not_declare_are_refused(cli, tmp_path, override, message):
    done = cli(*SINUSOID, override, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"metarun: error: {message}")
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a failed run all the same, which metarun-compare and a sweep's comparison list as such
    assert (tmp_path / "run" / "error.txt").exists() and (tmp_path / "run" / ".hydra" / "config.yaml").exists()


def test_declared_keys_may_still_be_forced_and_groups_added(cli, tmp_path):
    done = cli(*SINUSOID, "++trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["step"] == 3
    assert "test mse" in done.stdout


def flip_bytes_of_first_member(archive: Path) -> str:
    """Invert 64 bytes inside the stored data of the archive's first PNG (in sorted order, the
    first image a loader reads); returns the member's name."""
    with zipfile.ZipFile(archive) as z:
        member = z.getinfo(min(n for n in z.namelist() if n.endswith(".png")))
    data = bytearray(archive.read_bytes())
    header = member.header_offset
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
    start = header + 30 + name_length + extra_length + 8
    for i in range(start, start + min(64, member.compress_size - 8)):
        data[i] ^= 0xFF
    archive.write_bytes(bytes(data))
    return member.filename


@needs_omniglot_files
def test_a_damaged_archive_member_is_a_one_line_error_naming_it_and_fails_the_check(tmp_path, capsys):
    root = tmp_path / "omniglot"
    root.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        shutil.copy(Path(DATA_DIR) / "omniglot" / name, root / name)
    member = flip_bytes_of_first_member(root / "images_background.zip")
    with pytest.raises(DataError) as error:
        load_cached(root, tmp_path / "cache", 28, allow_download=False, download_url="http://127.0.0.1:9")
    message = str(error.value)
    assert f"{root / 'images_background.zip'}: member {member} is corrupt" in message
    assert "\n" not in message and "68d2efa1b9178cc56df9314c21c6e718" in message  # the upstream md5

    status = check("omniglot", ["data.source=local", f"paths.data_dir={tmp_path}", f"paths.cache_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert status == 1
    assert "| images_background.zip | BROKEN |" in out and member in out
    assert "| images_evaluation.zip | ok |" in out


def test_a_replaced_cache_is_rebuilt_not_used(tmp_path, caplog):
    cache = tmp_path / "data.npz"
    real = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4)}
    builds = []

    def build():
        builds.append(1)
        return real

    assert cached_arrays(cache, ("images",), build)["images"].sum() == real["images"].sum()
    assert cached_arrays(cache, ("images",), build) is not None and len(builds) == 1  # the cache serves
    np.savez(cache, images=np.zeros((2, 3, 4), dtype=np.uint8))  # readable, right shape, wrong content
    again = cached_arrays(cache, ("images",), build)
    assert len(builds) == 2 and np.array_equal(again["images"], real["images"])
    assert "differs from what was written when it was built" in caplog.text
    with np.load(cache) as stored:  # rebuilt on disk too
        assert np.array_equal(stored["images"], real["images"])
