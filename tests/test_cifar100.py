"""CIFAR-FS and FC100 from a small archive written in the official CIFAR-100 python format: the
published class splits, the archive and its extracted folder, the cache, and clear failures."""
from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

from conftest import short_protonet_run
from metarun.data import build_sources
from metarun.data.cifar100 import ARCHIVE, ARCHIVE_MD5, CIFAR_FS_CLASSES, FC100_SUPERCLASSES, FOLDER
from metarun.errors import DataError

# the 36 held-out CIFAR-FS names plus 64 stand-ins: 100 fine classes, alphabetical as upstream
FINE_NAMES = sorted([*CIFAR_FS_CLASSES["val"], *CIFAR_FS_CLASSES["test"]]
                    + [f"stand_in_{i:02d}" for i in range(64)])
PER_CLASS = 3  # 2 images in the archive's train member, 1 in its test member
TINY = ["data.images_per_class=3", "data.source=local"]


def coarse_of(fine: np.ndarray) -> np.ndarray:
    return fine // 5  # 20 super-classes of 5 fine classes, as in CIFAR-100


def member(fine: np.ndarray) -> dict:
    """A pickled split: every image's pixels all equal its fine label, so a test can read back
    which class an image came from."""
    data = np.repeat(fine.astype(np.uint8)[:, None], 3 * 32 * 32, axis=1)
    return {"data": data, "fine_labels": fine.tolist(), "coarse_labels": coarse_of(fine).tolist(),
            "filenames": [f"{i}.png" for i in range(len(fine))], "batch_label": "tiny"}


def members() -> dict[str, dict]:
    classes = np.arange(100)
    return {"train": member(np.repeat(classes, 2)), "test": member(classes),
            "meta": {"fine_label_names": FINE_NAMES,
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}}


def write_archive(root):
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / ARCHIVE, "w:gz") as archive:
        for name, content in members().items():
            payload = pickle.dumps(content)
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def write_folder(root):
    (root / FOLDER).mkdir(parents=True)
    for name, content in members().items():
        (root / FOLDER / name).write_bytes(pickle.dumps(content))


def classes_of(source) -> set[int]:
    return {int(v) for v in source.images[:, 0, 0, 0].unique()}


@pytest.mark.parametrize("writer", [write_archive, write_folder])
def test_cifar_fs_split_is_the_published_one(make_cfg, tmp_path, writer):
    writer(tmp_path / "cifar")
    sources = build_sources(make_cfg("data=cifarfs", *TINY, f"data.root={tmp_path / 'cifar'}").data,
                            make_cfg().paths)
    names = {split: {FINE_NAMES[c] for c in classes_of(source)} for split, source in sources.items()}
    assert names["test"] == set(CIFAR_FS_CLASSES["test"])
    assert names["val"] == set(CIFAR_FS_CLASSES["val"])
    assert len(names["train"]) == 64 and not names["train"] & (names["val"] | names["test"])
    for source in sources.values():
        assert source.image_shape == (3, 32, 32)
        assert (source.counts == PER_CLASS).all()  # the archive's train and test images together


def test_fc100_split_is_by_super_class(make_cfg, tmp_path):
    write_archive(tmp_path / "cifar")
    sources = build_sources(make_cfg("data=fc100", *TINY, f"data.root={tmp_path / 'cifar'}").data,
                            make_cfg().paths)
    for split, source in sources.items():
        superclasses = {int(c) // 5 for c in classes_of(source)}
        assert superclasses == set(FC100_SUPERCLASSES[split]), split
        assert source.n_classes == 5 * len(FC100_SUPERCLASSES[split])


def test_missing_data_says_what_to_put_where(make_cfg, tmp_path):
    cfg = make_cfg("data=cifarfs", *TINY, f"data.root={tmp_path / 'nothing'}")
    with pytest.raises(DataError) as error:
        build_sources(cfg.data, cfg.paths)
    message = str(error.value)
    for part in (ARCHIVE, ARCHIVE_MD5, FOLDER, str(tmp_path / "nothing"), "data.source=local never downloads"):
        assert part in message


def test_corrupt_or_wrong_files_are_named(make_cfg, tmp_path):
    root = tmp_path / "cifar"
    root.mkdir()
    (root / ARCHIVE).write_bytes(b"not a tar archive")
    cfg = make_cfg("data=fc100", *TINY, f"data.root={root}", f"paths.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(DataError, match=f"{ARCHIVE}: cannot read the CIFAR-100 member"):
        build_sources(cfg.data, cfg.paths)
    (root / ARCHIVE).unlink()
    write_archive(root)
    cfg = make_cfg("data=fc100", "data.source=local", f"data.root={root}")  # 600 images a class expected
    with pytest.raises(DataError, match="expected 600 images per class"):
        build_sources(cfg.data, cfg.paths)


def test_a_run_on_cifar_fs_files(cli, tmp_path):
    write_archive(tmp_path / "cifar")
    results = short_protonet_run(cli, tmp_path / "run", "data=cifarfs", *TINY, f"data.root={tmp_path / 'cifar'}",
                                 "data.queries=2", "algo.episode.queries=2")
    assert results["data"] == "cifarfs" and results["n_episodes"] == 20
    # each class is one flat grey level here, so 20 steps separate them (chance: 50%)
    assert results["mean"] > 0.8


def test_data_check_reports_the_archive_and_the_splits(make_cfg, tmp_path, capsys):
    from metarun.data_check import check
    write_archive(tmp_path / "cifar")
    status = check("fc100", [*TINY, f"data.root={tmp_path / 'cifar'}", f"paths.cache_dir={tmp_path / 'cache'}"])
    report = capsys.readouterr().out
    assert status == 0
    assert "no: re-packed or damaged; structure checked below" in report  # not the upstream bytes
    assert "| test | 20 | 60 | (3, 32, 32) |" in report
