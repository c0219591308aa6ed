"""CUB-200-2011 from a small archive and folder in the official layout: Chen et al.'s split,
classes of different sizes, and clear failures."""
from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from metarun.data import build_sources
from metarun.data.cub import ARCHIVE, ARCHIVE_MD5, FOLDER
from metarun.errors import DataError

CLASSES = [f"{i + 1:03d}.Species_{chr(65 + i)}" for i in range(8)]  # sorted as upstream
TINY = ["data=cub", "data.source=local", "data.classes=8", "data.images=28", "data.image_size=16"]


def write_folder(root):
    """Class i holds 2 + i // 2 photographs (2 to 5), each a flat grey of level 20 * i."""
    for i, name in enumerate(CLASSES):
        folder = root / FOLDER / "images" / name
        folder.mkdir(parents=True)
        for k in range(2 + i // 2):
            Image.new("RGB", (40 + 3 * k, 30), (20 * i,) * 3).save(folder / f"{name}_{k}.jpg", quality=100)
    (root / FOLDER / "images.txt").write_text("")  # the other upstream files are not read


def write_archive(root):
    write_folder(root / "extracted")
    with tarfile.open(root / ARCHIVE, "w:gz") as archive:
        archive.add(root / "extracted" / FOLDER, arcname=FOLDER)
    shutil.rmtree(root / "extracted")


def classes_of(source) -> set[int]:
    return {round(float(v) / 20) for v in source.images[:, 0, 8, 8].unique()}


@pytest.mark.parametrize("writer", [write_archive, write_folder])
def test_chen_split_of_cub(make_cfg, tmp_path, writer):
    writer(tmp_path / "cub")
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'cub'}")
    sources = build_sources(cfg.data, cfg.paths)
    assert {split: classes_of(s) for split, s in sources.items()} == {
        "train": {0, 2, 4, 6}, "val": {1, 5}, "test": {3, 7}}
    assert sources["test"].counts.tolist() == [3, 5]  # classes keep their own image counts
    assert sources["train"].image_shape == (3, 16, 16)


def test_missing_and_miscounted_data_are_explained(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'nothing'}")
    with pytest.raises(DataError) as error:
        build_sources(cfg.data, cfg.paths)
    for part in (ARCHIVE, ARCHIVE_MD5, FOLDER, str(tmp_path / "nothing"), "never downloads"):
        assert part in str(error.value)
    write_folder(tmp_path / "cub")
    cfg = make_cfg("data=cub", "data.source=local", "data.image_size=16", f"data.root={tmp_path / 'cub'}")
    with pytest.raises(DataError, match="expected 200 classes and 11788 images .* found 8 and 28"):
        build_sources(cfg.data, cfg.paths)


def test_a_corrupt_archive_is_named(make_cfg, tmp_path):
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / ARCHIVE).write_bytes(np.random.default_rng(0).bytes(1000))
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'cub'}")
    with pytest.raises(DataError, match=f"{ARCHIVE}: not a readable CUB-200-2011 archive"):
        build_sources(cfg.data, cfg.paths)
