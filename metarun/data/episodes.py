"""Episode sources: where tasks come from, one per split (train / val / test).

Every source draws episodes from a ``torch.Generator`` it is handed, so the meta-training
stream is reproducible (and resumable: the trainer checkpoints the generator), and the
validation/test episodes are a fixed list that depends only on the seed, the split and the
episode shape -- identical for every algorithm, so results can be compared episode by episode.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
import torch

from metarun.data.augment import Augmentation
from metarun.tasks import Task, TaskBatch

# images drawn (evenly spaced) to estimate a data set's per-channel mean and std
NORMALISATION_SAMPLE = 10_000


class EpisodeSource:
    """Base class. Subclasses implement ``sample``."""

    metric: str  # "accuracy" or "return" (higher is better), or "mse" (lower is better)
    kind: str  # "image", "regression", or a meta-RL task family: "bandit", "navigation"
    n_classes: int | None = None  # classes of a classification source
    action_size: int | None = None  # action dimensions of a continuous-control task family

    def sample(self, generator: torch.Generator, n_tasks: int, *shape: int) -> TaskBatch:
        """``n_tasks`` tasks; ``shape`` is (ways, shots, queries) for few-shot sources and empty
        for the meta-RL task families, whose tasks are environments."""
        raise NotImplementedError

    def fixed_episodes(self, n: int, seed: int, split: str, *shape: int) -> Iterator[Task]:
        """The same ``n`` episodes for a given (seed, split), drawn one at a time so that
        episode i does not depend on how many are requested or how they are batched later.
        The split enters the seed so that validation and test episodes differ even where
        both splits draw from one task family (sinusoid)."""
        generator = torch.Generator().manual_seed(split_seed(seed, split))
        for _ in range(n):
            yield self.sample(generator, 1, *shape)[0]


def smallest(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest keys along the last dimension, smallest first: the first ``k``
    of ``keys.argsort(dim=-1)``, in O(n) instead of a full sort (20x faster for Omniglot's 4,800
    classes). Tied keys (float32 uniforms: about 1 task in 2,400 has a tie among its smallest
    Omniglot keys) may come in another order than the unstable sort put them."""
    return keys.topk(k, dim=-1, largest=False, sorted=True).indices


def seeded_rank(names, seed: int) -> np.ndarray:
    """An order of ``names`` by a hash of (seed, name): a seeded shuffle that no library version
    can change, so a split named by its seed is the same everywhere, forever."""
    keys = [hashlib.sha256(f"{seed}:{n}".encode()).hexdigest() for n in names]
    return np.argsort(keys, kind="stable")


def split_seed(seed: int, split: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{split}".encode()).digest()[:8], "little") >> 1


class FewShotImageSource(EpisodeSource):
    """N-way K-shot classification episodes drawn by indexing a uint8 image tensor.

    ``class_images[c]`` lists the indices (into ``images``) of class c's images, and
    ``class_rotation[c]`` the number of quarter turns applied to them, so a rotated copy of a
    character is a class of its own. Sources with turned classes store each class's images
    turned, once, at construction (``turned_copies``): an episode is then one ``index_select``,
    where turning every drawn image again took most of the sampler's time. The price is memory:
    the classes' images x their count (Omniglot's training split at 28x28: 75 MB).

    ``class_group`` (set by a data set that groups its classes, e.g. Omniglot's alphabets) makes
    every episode draw its classes from one group: the group uniformly among those with at least
    ``ways`` classes, then the classes uniformly within it.
    """

    metric = "accuracy"
    kind = "image"

    def __init__(self, images: torch.Tensor, class_images: list[torch.Tensor],
                 class_rotation: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor N x C x H x W")
        self.rotation = (class_rotation if class_rotation is not None
                         else torch.zeros(len(class_images), dtype=torch.long))
        # origin[i]: the index, in the images given, of the stored image i
        self.origin = torch.arange(len(images))
        if bool((self.rotation % 4 != 0).any()):
            self.origin = torch.cat(class_images)
            images, class_images = turned_copies(images, class_images, self.rotation)
        self.images = images
        counts = torch.tensor([len(c) for c in class_images])
        self.table = torch.zeros(len(class_images), int(counts.max()), dtype=torch.long)
        for c, idx in enumerate(class_images):
            self.table[c, : len(idx)] = idx
        self.counts = counts
        self.normalisation: tuple[torch.Tensor, torch.Tensor] | None = None  # per-channel mean, std
        self.augmentation: Augmentation | None = None  # the meta-training split's alone
        self.class_group: torch.Tensor | None = None  # [n_classes] group ids; None: classes drawn from all
        self.class_names: list[str] | None = None  # the classes by name, where a data set names them (folders)

    def channel_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the pixel values in [0, 1], over up to
        NORMALISATION_SAMPLE evenly spaced images."""
        picks = torch.linspace(0, len(self.images) - 1, min(len(self.images), NORMALISATION_SAMPLE)).long()
        pixels = self.images[picks].float().div_(255.0)
        return pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Images [..., C, H, W] in [0, 1] as the learner sees them."""
        if self.normalisation is None:
            return x
        mean, std = (s.to(x.device).view(-1, 1, 1) for s in self.normalisation)
        return (x - mean) / std

    @classmethod
    def from_nhwc(cls, images: np.ndarray, labels: np.ndarray) -> "FewShotImageSource":
        """A source of uint8 images [N, H, W, C] (the layout of image files and the published
        pickles) whose class c holds the images labelled c (labels 0..C-1)."""
        labels = torch.from_numpy(labels)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels).tolist()
        return cls(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), list(order.split(counts)))

    @property
    def n_classes(self) -> int:
        return self.table.shape[0]

    @property
    def min_images_per_class(self) -> int:
        return int(self.counts.min())

    @property
    def largest_group(self) -> int:
        """The classes of the largest group (all classes when ungrouped): the most ways an episode can have."""
        if self.class_group is None:
            return self.n_classes
        return int(torch.bincount(self.class_group).max())

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def to(self, device) -> "FewShotImageSource":
        self.images = self.images.to(device)
        return self

    def draw(self, generator: torch.Generator, n_tasks: int, ways: int,
             per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class ids [T, ways] (distinct within a task, in random label order) and image ids
        [T, ways, per_class] (distinct within a class)."""
        keys = torch.rand(n_tasks, self.n_classes, generator=generator)
        if self.class_group is not None:
            keys[self.class_group != self.draw_groups(generator, n_tasks, ways).unsqueeze(1)] = 2.0
        # the ways smallest keys, in increasing order: argsort(keys)[:, :ways] without sorting
        # all classes; keys of 2.0 (other groups' classes) come last
        classes = smallest(keys, ways)
        keys = torch.rand(n_tasks, ways, self.table.shape[1], generator=generator)
        beyond = torch.arange(self.table.shape[1]) >= self.counts[classes].unsqueeze(-1)
        keys[beyond] = 2.0  # slots past a class's last image sort last and are never picked
        slots = smallest(keys, per_class)
        return classes, self.table[classes.unsqueeze(-1), slots]

    def draw_groups(self, generator: torch.Generator, n_tasks: int, ways: int) -> torch.Tensor:
        """One group id per task, uniformly among the groups with at least ``ways`` classes."""
        sizes = torch.bincount(self.class_group)
        eligible = torch.nonzero(sizes >= ways).flatten()
        if len(eligible) == 0:
            raise ValueError(f"no class group has {ways} classes (the largest has {int(sizes.max())})")
        return eligible[torch.randint(len(eligible), (n_tasks,), generator=generator)]

    def sample(self, generator, n_tasks, ways, shots, queries) -> TaskBatch:
        classes, picks = self.draw(generator, n_tasks, ways, shots + queries)
        labels = torch.arange(ways, device=self.images.device)
        return TaskBatch(
            support_x=self.images_of(picks[:, :, :shots].reshape(n_tasks, -1), generator),
            support_y=labels.repeat_interleave(shots).expand(n_tasks, -1),
            query_x=self.images_of(picks[:, :, shots:].reshape(n_tasks, -1), generator),
            query_y=labels.repeat_interleave(queries).expand(n_tasks, -1),
            classes=classes.to(self.images.device),
        )

    def images_of(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images ``ids`` [T, N] as the learner sees them: [T, N, C, H, W] floats, augmented
        (meta-training only) and normalised."""
        x = self.images.index_select(0, ids.flatten().to(self.images.device))
        x = x.view(*ids.shape, *x.shape[1:]).float().div_(255.0)
        if self.augmentation is not None:
            x = self.augmentation(x, generator)
        return self.normalise(x)


def turned_copies(images: torch.Tensor, class_images: list[torch.Tensor],
                  quarter_turns: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every class's images turned by its quarter turns, in class order, and each class's image
    ids in that new tensor."""
    counts = [len(c) for c in class_images]
    turned = images[torch.cat(class_images)]  # a copy
    turns = (quarter_turns % 4).repeat_interleave(torch.tensor(counts))
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            turned[chosen] = torch.rot90(turned[chosen], k, dims=(-2, -1))
    return turned, list(torch.arange(len(turned)).split(counts))
