"""The Omniglot one-shot challenge of Lake et al. 2015: reading the runs, the scorer, the CLI."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import DATA_DIR, needs_omniglot_files
from metarun.config_check import validate_config
from metarun.data.lake_runs import (ARCHIVE, SHA256, locate_runs, modified_hausdorff_error, read_runs,
                                    run_task)
from metarun.errors import ConfigError, DataError


def runs_archive() -> Path:
    return Path(DATA_DIR) / "omniglot" / ARCHIVE


@needs_omniglot_files
def test_runs_are_read_as_20_way_one_shot_tasks():
    runs = read_runs(runs_archive())
    assert len(runs) == 20
    # run01/class_labels.txt: item01 belongs to class08, item02 to class09, item03 to class02
    assert runs[0].labels[:3] == [7, 8, 1]
    task = run_task(runs[0], 28, normalise=lambda x: x)
    assert task.support_x.shape == task.query_x.shape == (20, 1, 28, 28)
    assert sorted(task.query_y.tolist()) == list(range(20))  # one test drawing per character
    assert 0.0 <= float(task.support_x.min()) and float(task.support_x.max()) <= 1.0
    # the meta-training source's normalisation is applied to the runs' images too
    shifted = run_task(runs[0], 28, normalise=lambda x: x - 0.5)
    torch.testing.assert_close(shifted.query_x, task.query_x - 0.5)


@needs_omniglot_files
def test_modified_hausdorff_baseline_reproduces_the_upstream_error():
    """Upstream's nearest-neighbour baseline by modified Hausdorff distance: 38.75% error on
    these runs. Getting it exactly checks the run reader and the error averaging."""
    assert modified_hausdorff_error(read_runs(runs_archive())) == pytest.approx(38.75)


def test_a_malformed_archive_names_the_missing_file(tmp_path):
    archive = tmp_path / ARCHIVE
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("run01/class_labels.txt", "run01/test/item01.png run01/training/class01.png\n")
    with pytest.raises(DataError, match="run01/training/class01.png is missing"):
        read_runs(archive)


def test_offline_message_says_which_file_goes_where(tmp_path):
    with pytest.raises(DataError) as error:
        locate_runs(tmp_path, allow_download=False, download_url="https://example.org/omniglot/python")
    message = str(error.value)
    assert f"{tmp_path}/" in message and SHA256 in message
    assert "https://example.org/omniglot/python/one-shot-classification/all_runs.zip" in message


@pytest.mark.parametrize("overrides, key", [
    (("eval=lake_runs",), "data.split"),                             # vinyals trains on the runs' alphabets
    (("eval=lake_runs", "data.split=lake", "algo=maml"), "data.ways"),  # MAML's head must be 20-way
    (("eval=lake_runs", "data=sinusoid", "backbone=mlp", "algo=maml"), "eval"),
])
def test_lake_runs_configs_that_cannot_work_fail_at_start(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*overrides))
    assert error.value.key == key


@needs_omniglot_files
def test_protonet_trained_on_background_alphabets_scores_the_runs(cli, tmp_path):
    cli("algo=protonet", "data.split=lake", "eval=lake_runs", "trainer.max_steps=100", "algo.episode.ways=20",
        "trainer.val_every=0", f"hydra.run.dir={tmp_path}", f"paths.data_dir={DATA_DIR}")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["protocol"] == "lake_runs" and results["n_episodes"] == 20 and results["split"] == "lake"
    assert results["error_rate_percent"] == pytest.approx(100 * (1 - results["mean"]))
    assert results["error_rate_percent"] < 50  # chance: 95%
    assert results["reference_error_rates_percent"]["Siamese ConvNet"] == 8.0
