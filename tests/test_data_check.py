"""``metarun-data check``: files, checksums, structure and split counts, as a table."""
from __future__ import annotations

from conftest import DATA_DIR, needs_omniglot_files
from metarun.data_check import check
from test_miniimagenet import TINY, write_pickle_layout


@needs_omniglot_files
def test_check_reports_the_real_omniglot_files_and_splits(capsys, cache_dir):
    status = check("omniglot", ["data.source=local", f"paths.data_dir={DATA_DIR}", f"paths.cache_dir={cache_dir}",
                                "data.split=lake", "data.val_characters=0"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| images_background.zip | ok |" in out and "| 30 | 964 | 19280 |" in out
    assert "| images_evaluation.zip | ok |" in out and "| 20 | 659 | 13180 |" in out
    assert "| all_runs.zip | ok | 437c1eeab0af8484… | yes | 20 runs |" in out
    # the lake split: 964 background characters x 4 rotations train, 659 x 4 test
    assert "| train | 3856 | 77120 | (1, 28, 28) |" in out and "| test | 2636 | 52720 | (1, 28, 28) |" in out


def test_check_fails_on_missing_files_and_says_which(capsys, tmp_path):
    status = check("omniglot", ["data.source=local", f"paths.data_dir={tmp_path}"])
    captured = capsys.readouterr()
    assert status == 1
    assert "| images_background.zip | MISSING |" in captured.out
    assert "images_evaluation.zip  from https://github.com/brendenlake/omniglot" in captured.err


def test_check_reports_mini_imagenet_splits(capsys, tmp_path):
    write_pickle_layout(tmp_path / "mini")
    status = check("miniimagenet", [*TINY[1:], f"data.root={tmp_path / 'mini'}", f"paths.cache_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert status == 0 and "| train | 3 | 18 | (3, 16, 16) |" in out and "| val | 2 | 12 | (3, 16, 16) |" in out
