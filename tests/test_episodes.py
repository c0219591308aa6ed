"""The episode sampler and the Omniglot splits."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from metarun.data.episodes import FewShotImageSource
from metarun.data.omniglot import build_omniglot, load_embedded, split_characters
from metarun.data.sinusoid import SinusoidSource


def omniglot_cfg(**changes):
    base = dict(name="omniglot", kind="image", source="embedded", split="vinyals", val_characters=100,
                split_seed=0, rotations=True, image_size=28, ways=5, shots=1, queries=15,
                train_task_classes="any")
    return OmegaConf.create({**base, **changes})


@pytest.fixture(scope="module")
def arrays():
    return load_embedded()


@pytest.fixture(scope="module")
def sources():
    return build_omniglot(omniglot_cfg(), None)


@pytest.mark.parametrize("split, sizes", [("vinyals", (1100, 100, 423)), ("lake", (864, 100, 659))])
def test_splits_are_disjoint_and_complete(arrays, split, sizes):
    parts = split_characters(arrays, split, 100, split_seed=0)
    assert tuple(len(parts[k]) for k in ("train", "val", "test")) == sizes
    everything = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert len(np.unique(everything)) == len(everything) == 1623


def test_split_definitions_match_the_papers(arrays):
    names = arrays["character_names"]
    vinyals = split_characters(arrays, "vinyals", 0, 0)
    assert names[vinyals["test"][0]] == "Gurmukhi/character42"  # Vinyals' 423 test characters start here
    assert names[vinyals["test"][-1]] == "ULOG/character26"
    lake = split_characters(arrays, "lake", 0, 0)
    assert arrays["background"][lake["train"]].all() and not arrays["background"][lake["test"]].any()


def test_validation_draw_is_seeded(arrays):
    first = split_characters(arrays, "vinyals", 100, split_seed=0)["val"]
    assert np.array_equal(first, split_characters(arrays, "vinyals", 100, split_seed=0)["val"])
    assert not np.array_equal(first, split_characters(arrays, "vinyals", 100, split_seed=1)["val"])


def test_episode_classes_come_from_their_split_only(sources):
    images = {}
    for split, source in sources.items():
        images[split] = set(source.origin[source.table[:, :20]].flatten().tolist())
    assert not images["train"] & images["val"]
    assert not images["train"] & images["test"]
    assert not images["val"] & images["test"]


def test_episode_labels_and_disjoint_support_query(sources):
    source = sources["train"]
    generator = torch.Generator().manual_seed(0)
    classes, picks = source.draw(generator, 64, 20, 6)
    for t in range(64):
        assert len(set(classes[t].tolist())) == 20  # distinct classes per task
        for w in range(20):
            assert len(set(picks[t, w].tolist())) == 6  # no image both in support and query
    batch = source.sample(generator, 4, 20, 1, 5)
    assert batch.support_x.shape == (4, 20, 1, 28, 28)
    assert batch.query_x.shape == (4, 100, 1, 28, 28)
    assert torch.equal(batch.support_y[0], torch.arange(20))
    assert sorted(batch.query_y[0].tolist()) == sorted(list(range(20)) * 5)
    assert 0.0 <= float(batch.support_x.min()) and float(batch.support_x.max()) <= 1.0


def test_rotated_classes_are_rotated_images():
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    # classes: image 0 as drawn, image 0 turned once, image 1 turned three times, image 2 twice
    source = FewShotImageSource(images, [torch.tensor([0]), torch.tensor([0]), torch.tensor([1]),
                                         torch.tensor([2])], torch.tensor([0, 1, 3, 2]))
    turns = {0: (0, 0), 1: (0, 1), 2: (1, 3), 3: (2, 2)}
    batch = source.sample(torch.Generator().manual_seed(3), 8, 4, 1, 0)
    for task in range(8):
        for way, c in enumerate(batch.classes[task].tolist()):
            image, k = turns[c]
            expected = torch.rot90(images[image].float() / 255, k, dims=(-2, -1))
            assert torch.equal(batch.support_x[task, way], expected)
    assert source.origin.tolist() == [0, 0, 1, 2]


def test_sampler_draws_the_episodes_of_its_sorting_version(sources):
    """The sampler picks classes and images by the smallest of uniform keys (topk) instead of
    sorting every key; the episodes are those of the sorted version, whose draw is written out
    here (the keys of one task tie among its smallest ones about once in 2,400 tasks; none do in
    these 64)."""
    source = sources["train"]
    generator = torch.Generator().manual_seed(11)
    batch = source.sample(generator, 64, 5, 1, 3)
    replay = torch.Generator().manual_seed(11)
    keys = torch.rand(64, source.n_classes, generator=replay)
    classes = keys.argsort(dim=1)[:, :5]
    keys = torch.rand(64, 5, source.table.shape[1], generator=replay)
    keys[torch.arange(source.table.shape[1]) >= source.counts[classes].unsqueeze(-1)] = 2.0
    picks = source.table[classes.unsqueeze(-1), keys.argsort(dim=-1)[..., :4]]
    assert torch.equal(batch.classes, classes)
    expected = source.images[picks].float() / 255
    assert torch.equal(batch.support_x, expected[:, :, 0])
    assert torch.equal(batch.query_x, expected[:, :, 1:].reshape(64, 15, 1, 28, 28))


def test_same_seed_same_episodes_and_fresh_images_per_draw(sources):
    source = sources["test"]
    a = list(source.fixed_episodes(20, 0, "test", 5, 1, 15))
    b = list(source.fixed_episodes(5, 0, "test", 5, 1, 15))
    for x, y in zip(a, b):  # episode i does not depend on how many were requested
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)
    c = next(source.fixed_episodes(1, 1, "test", 5, 1, 15))
    assert not torch.equal(a[0].support_x, c.support_x)
    # the same class combination does not come back with the same images every time
    generator = torch.Generator().manual_seed(0)
    _, first = source.draw(generator, 1, 5, 3)
    repeats = [source.draw(generator, 1, 5, 3)[1] for _ in range(5)]
    assert any(not torch.equal(first, r) for r in repeats)


def test_same_alphabet_episodes_keep_to_one_rotated_alphabet(arrays):
    grouped = build_omniglot(omniglot_cfg(split="lake", train_task_classes="same_alphabet"), None)
    train, names = grouped["train"], arrays["character_names"]
    characters = split_characters(arrays, "lake", 100, split_seed=0)["train"]
    character_of_class = np.repeat(characters, 4)  # each character once per rotation, in that order
    classes, _ = train.draw(torch.Generator().manual_seed(0), 400, 20, 2)
    alphabets_drawn = set()
    for task in classes.tolist():
        alphabets = {str(names[character_of_class[c]]).split("/")[0] for c in task}
        rotations = {int(train.rotation[c]) for c in task}
        assert len(alphabets) == 1 and len(rotations) == 1 and len(set(task)) == 20
        alphabets_drawn |= alphabets
    # every background alphabet left with 20 characters after the validation hold-out is drawn
    counts = collections.Counter(str(names[c]).split("/")[0] for c in characters)
    assert alphabets_drawn == {a for a, n in counts.items() if n >= 20}
    assert train.largest_group == max(counts.values())
    assert grouped["val"].class_group is None and grouped["test"].class_group is None
    # ungrouped sources draw exactly as before the option existed
    plain = build_omniglot(omniglot_cfg(split="lake"), None)["train"]
    before = torch.rand(3, plain.n_classes, generator=torch.Generator().manual_seed(5)).argsort(dim=1)[:, :20]
    assert torch.equal(plain.draw(torch.Generator().manual_seed(5), 3, 20, 2)[0], before)


def test_sinusoid_tasks_follow_the_paper_ranges():
    source = SinusoidSource((0.1, 5.0), (0.0, np.pi), (-5.0, 5.0))
    batch = source.sample(torch.Generator().manual_seed(0), 1000, 1, 5, 10)
    assert batch.support_x.shape == (1000, 5, 1) and batch.query_x.shape == (1000, 10, 1)
    assert float(batch.support_x.abs().max()) <= 5.0
    assert float(batch.support_y.abs().max()) <= 5.0
    val = next(source.fixed_episodes(1, 0, "val", 1, 5, 10))
    test = next(source.fixed_episodes(1, 0, "test", 1, 5, 10))
    assert not torch.equal(val.support_x, test.support_x)  # validation never sees test tasks
