"""mini-ImageNet from the two layouts researchers have, written here in the real formats at a
tiny scale (3 / 2 / 2 classes of 6 images, 16x16): split logic, cache, errors, a CLI run."""
from __future__ import annotations

import csv
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import metarun
from conftest import short_protonet_run
from metarun.data import build_sources
from metarun.errors import ConfigError, DataError
from metarun.registry import EXPERIMENTS

CLASSES = {"train": ["n01532829", "n01558993", "n01704323"], "val": ["n01855672", "n02091244"],
           "test": ["n01930112", "n01981276"]}
PER_CLASS, SIZE = 6, 16
TINY = ("data=miniimagenet", f"data.image_size={SIZE}", "data.classes.train=3", "data.classes.val=2",
        "data.classes.test=2", f"data.images_per_class={PER_CLASS}")


def pixels(split: str) -> dict[str, np.ndarray]:
    """Distinct, reproducible images per class: class i of a split has mean colour ~ 40 * (i + 1)."""
    rng = np.random.default_rng(len(split))
    return {name: (rng.integers(0, 30, (PER_CLASS, SIZE, SIZE, 3)) + 40 * (i + 1)).astype(np.uint8)
            for i, name in enumerate(CLASSES[split])}


def write_csv_layout(root):
    (root / "images").mkdir(parents=True)
    for split in CLASSES:
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for name, images in pixels(split).items():
                for k, image in enumerate(images):
                    filename = f"{name}{k + 1:08d}.png"  # lossless, so both layouts hold equal pixels
                    Image.fromarray(image).save(root / "images" / filename)
                    writer.writerow([filename, name])


def write_pickle_layout(root):
    root.mkdir(parents=True, exist_ok=True)
    for split in CLASSES:
        by_class = pixels(split)
        data = np.concatenate(list(by_class.values()))
        class_dict = {name: list(range(i * PER_CLASS, (i + 1) * PER_CLASS)) for i, name in enumerate(by_class)}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f)


@pytest.mark.parametrize("writer", [write_csv_layout, write_pickle_layout])
def test_both_layouts_give_the_same_splits(make_cfg, tmp_path, writer):
    writer(tmp_path / "mini")
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'mini'}")
    sources = build_sources(cfg.data, cfg.paths)
    assert {k: s.n_classes for k, s in sources.items()} == {"train": 3, "val": 2, "test": 2}
    for split, source in sources.items():
        assert source.image_shape == (3, SIZE, SIZE) and source.min_images_per_class == PER_CLASS
        # class c (names sorted) holds exactly that class's pixels, in file order
        expected = pixels(split)[CLASSES[split][1]]
        got = source.images[source.table[1, :PER_CLASS]].permute(0, 2, 3, 1).numpy()
        assert np.array_equal(got, expected)
    batch = sources["train"].sample(torch.Generator().manual_seed(0), 2, 3, 1, 2)
    assert batch.support_x.shape == (2, 3, 3, SIZE, SIZE)


def test_the_cache_serves_later_runs(make_cfg, tmp_path):
    write_csv_layout(tmp_path / "mini")
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'mini'}", f"paths.cache_dir={tmp_path / 'cache'}")
    first = build_sources(cfg.data, cfg.paths)["train"]
    assert len(list((tmp_path / "cache").glob("miniimagenet_*.npz"))) == 3
    for image in (tmp_path / "mini" / "images").iterdir():  # the cache, not the files, is read now
        image.write_bytes(b"")
    assert torch.equal(build_sources(cfg.data, cfg.paths)["train"].images, first.images)


def test_missing_data_says_what_to_put_where(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, f"data.root={tmp_path / 'nothing'}")
    with pytest.raises(DataError) as error:
        build_sources(cfg.data, cfg.paths)
    message = str(error.value)
    assert str(tmp_path / "nothing") in message and "does not download" in message
    assert "train.csv" in message and "mini-imagenet-cache-test.pkl" in message


def test_malformed_files_are_named(make_cfg, tmp_path):
    root = tmp_path / "mini"
    write_csv_layout(root)
    cfg = make_cfg(*TINY, f"data.root={root}", "data.classes.train=64")
    with pytest.raises(DataError, match=r"train.csv: expected 64 classes .* found 3"):
        build_sources(cfg.data, cfg.paths)
    victim = next((root / "images").glob(f"{CLASSES['val'][0]}*.png"))
    victim.unlink()
    cfg = make_cfg(*TINY, f"data.root={root}")
    with pytest.raises(DataError, match=f"{victim.name} .listed in .*val.csv. is missing or not an image"):
        build_sources(cfg.data, cfg.paths)

    shutil.rmtree(root)
    write_pickle_layout(root)
    with open(root / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"images": np.zeros((2, SIZE, SIZE, 3), np.uint8)}, f)
    with pytest.raises(DataError, match="mini-imagenet-cache-val.pkl: expected a dict with image_data"):
        build_sources(cfg.data, cfg.paths)


def test_a_run_on_mini_imagenet_files(cli, tmp_path):
    write_pickle_layout(tmp_path / "mini")
    results = short_protonet_run(cli, tmp_path / "run", *TINY, f"data.root={tmp_path / 'mini'}",
                                 "data.queries=3", "algo.episode.queries=3")
    assert results["data"] == "miniimagenet" and results["n_episodes"] == 20
    # classes differ by mean colour here, so even 20 steps separate them (chance: 50%)
    assert results["mean"] > 0.8


# FEAT's two stages chain (below); the others are one run each
MINI_RECIPES = sorted(p.stem for p in EXPERIMENTS.glob("*miniimagenet*.yaml") if not p.stem.startswith("feat_"))


@pytest.mark.parametrize("recipe", MINI_RECIPES)
def test_each_mini_imagenet_recipe_trains(tmp_path, recipe):
    """Each mini-ImageNet recipe (the authors' training: MetaOptNet's ResNet-12 with DropBlock,
    Nesterov SGD on a piecewise schedule and label smoothing; BOIL's body-only second-order
    inner step) passes the start checks and trains two updates, on the tiny copy: its episodes
    shrunk to the 2 test classes of 6 images there."""
    write_pickle_layout(tmp_path / "mini")
    results = metarun.run([f"+experiment={recipe}", *TINY, f"data.root={tmp_path / 'mini'}",
                           "algo.episode.ways=2", "algo.episode.shots=2", "algo.episode.queries=2",
                           "algo.meta_batch=2", "data.ways=2", "data.queries=3", "trainer.max_steps=2",
                           "trainer.val_every=0", "eval.episodes=2", "trainer.progress=false", "device=cpu"],
                          run_dir=tmp_path / "run")
    assert (results["algo"], results["data"], results["step"]) == (recipe.split("_")[0], "miniimagenet", 2)


def test_feats_two_stage_recipe_chains(tmp_path):
    """FEAT's mini-ImageNet recipe: stage 1 pre-trains the ConvNet by whole classification,
    stage 2 starts from its backbone (and refuses to start without it) with the set function at
    10x the backbone's rate."""
    write_pickle_layout(tmp_path / "mini")
    tiny = [*TINY, f"data.root={tmp_path / 'mini'}", "data.ways=2", "data.queries=3", "trainer.max_steps=2",
            "eval.episodes=2", "trainer.progress=false", "device=cpu", "trainer.val_every=0"]
    with pytest.raises(ConfigError, match=r"trainer.init_backbone='<stage-1 run dir>/checkpoints/last.pt' is not allowed: the path of the checkpoint"):
        metarun.run(["+experiment=feat_miniimagenet_conv4", *tiny], run_dir=tmp_path / "refused")
    stage1 = metarun.run(["+experiment=feat_miniimagenet_conv4_stage1", *tiny, "algo.episode.ways=3",
                          "algo.fine_tune.epochs=2"], run_dir=tmp_path / "stage1")
    assert (stage1["algo"], stage1["step"]) == ("baseline", 2)
    checkpoint = tmp_path / "stage1" / "checkpoints" / "last.pt"
    stage2 = metarun.run(["+experiment=feat_miniimagenet_conv4", *tiny, f"trainer.init_backbone={checkpoint}",
                          "algo.episode.ways=2", "algo.episode.shots=2", "algo.episode.queries=2"],
                         run_dir=tmp_path / "stage2")
    assert (stage2["algo"], stage2["step"]) == ("feat", 2)
