"""tiered-ImageNet from small files in the published formats (PNG pickles or decompressed .npz,
label pickles): the splits, the cache, and messages that name the file."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import short_protonet_run
from metarun.data import build_sources
from metarun.errors import DataError

SIZE = 16
CLASSES = {"train": 4, "val": 2, "test": 3}
PER_CLASS = 3
TINY = ["data=tieredimagenet", f"data.image_size={SIZE}",
        *(f"data.classes.{s}={n}" for s, n in CLASSES.items()),
        *(f"data.images.{s}={n * PER_CLASS}" for s, n in CLASSES.items())]
OFFSET = {"train": 0, "val": 100, "test": 200}  # the grey level of class c of a split: OFFSET + 10 c


def split_images(split: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.tile(np.arange(CLASSES[split]), PER_CLASS)  # interleaved, as shuffled upstream
    grey = OFFSET[split] + 10 * labels
    return np.repeat(grey.astype(np.uint8), SIZE * SIZE * 3).reshape(-1, SIZE, SIZE, 3), labels


def write_labels(root, split, labels):
    with open(root / f"{split}_labels.pkl", "wb") as f:
        pickle.dump({"label_specific": labels, "label_general": labels // 2,
                     "label_specific_str": [f"n{c:08d}" for c in range(CLASSES[split])],
                     "label_general_str": ["a", "b"]}, f)


def write_png_layout(root):
    root.mkdir(parents=True, exist_ok=True)
    for split in CLASSES:
        pixels, labels = split_images(split)
        encoded = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        with open(root / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(encoded, f)
        write_labels(root, split, labels)


def write_npz_layout(root):
    root.mkdir(parents=True, exist_ok=True)
    for split in CLASSES:
        pixels, labels = split_images(split)
        np.savez(root / f"{split}_images.npz", images=pixels)
        write_labels(root, split, labels)


@pytest.mark.parametrize("writer", [write_png_layout, write_npz_layout])
def test_both_published_formats_give_the_splits(make_cfg, tmp_path, writer):
    writer(tmp_path / "tiered")
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'tiered'}")
    sources = build_sources(cfg.data, cfg.paths)
    for split, source in sources.items():
        assert source.n_classes == CLASSES[split] and (source.counts == PER_CLASS).all()
        assert source.image_shape == (3, SIZE, SIZE)
        for c in range(CLASSES[split]):  # every image of class c is class c's own
            assert set(source.images[source.table[c], 0, 0, 0].tolist()) == {OFFSET[split] + 10 * c}


def test_missing_files_are_listed(make_cfg, tmp_path):
    write_npz_layout(tmp_path / "tiered")
    (tmp_path / "tiered" / "val_images.npz").unlink()
    (tmp_path / "tiered" / "test_labels.pkl").unlink()
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'tiered'}")
    with pytest.raises(DataError, match=r"does not download it.*Missing: test_labels.pkl, "
                                        r"val_images_png.pkl \(or val_images.npz\)"):
        build_sources(cfg.data, cfg.paths)


def test_malformed_or_miscounted_files_are_named(make_cfg, tmp_path):
    root = tmp_path / "tiered"
    write_png_layout(root)
    with open(root / "val_labels.pkl", "wb") as f:
        pickle.dump([0, 1], f)
    cfg = make_cfg(*TINY, f"data.root={root}")
    with pytest.raises(DataError, match="val_labels.pkl: expected a dict with label_specific"):
        build_sources(cfg.data, cfg.paths)
    write_png_layout(root)
    cfg = make_cfg(*TINY, f"data.root={root}", "data.classes.test=160")
    with pytest.raises(DataError, match="the test split should have 160 classes .* has 3 classes"):
        build_sources(cfg.data, cfg.paths)


def test_a_run_on_tiered_imagenet_files(cli, tmp_path):
    write_png_layout(tmp_path / "tiered")
    results = short_protonet_run(cli, tmp_path / "run", *TINY, f"data.root={tmp_path / 'tiered'}",
                                 "data.queries=2", "algo.episode.queries=2")
    assert results["data"] == "tieredimagenet" and results["n_episodes"] == 20
    assert results["mean"] > 0.8  # classes are flat grey levels here (chance: 50%)


def test_images_too_small_for_the_backbone_fail_at_start(make_cfg, tmp_path):
    from metarun.config_check import check_episode_shapes
    from metarun.errors import ConfigError
    write_npz_layout(tmp_path / "tiered")
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'tiered'}", "backbone=resnet12", "data.image_size=8")
    with pytest.raises(ConfigError, match="resnet12 halves them 4 times, so needs at least 16x16 .* gives 8x8"):
        check_episode_shapes(cfg, build_sources(cfg.data, cfg.paths))
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'tiered'}", "backbone.pooled_blocks=5", "backbone.blocks=5")
    with pytest.raises(ConfigError, match="needs at least 32x32 .* gives 16x16"):
        check_episode_shapes(cfg, build_sources(cfg.data, cfg.paths))
