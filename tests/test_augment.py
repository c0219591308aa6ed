"""Per-data-set normalisation and meta-training augmentation of image episodes."""
from __future__ import annotations

import torch

from metarun.data import prepare_images
from metarun.data.augment import Augmentation
from metarun.data.episodes import FewShotImageSource
from omegaconf import OmegaConf


NO_AFFINE = {"rotate_degrees": 0, "shear": 0.0, "scale": 0.0, "translate": 0.0}


def image_settings(normalize: bool, flip: bool, crop_padding: int):
    return OmegaConf.create({"normalize": normalize,
                             "augment": {"flip": flip, "crop_padding": crop_padding, **NO_AFFINE}})


def random_source(seed: int, classes: int = 6, per_class: int = 4) -> FewShotImageSource:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * per_class, 8, 8, 3), generator=generator, dtype=torch.uint8)
    return FewShotImageSource.from_nhwc(images.numpy(), torch.arange(classes).repeat_interleave(per_class).numpy())


def test_flips_mirror_some_images_and_leave_the_others():
    x = torch.rand(64, 3, 5, 7)
    out = Augmentation(flip=True, crop_padding=0, **NO_AFFINE)(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crops_are_windows_of_the_zero_padded_image():
    x = torch.rand(2, 3, 3, 6, 6)  # [tasks, images, C, H, W]
    out = Augmentation(flip=False, crop_padding=2, **NO_AFFINE)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x.reshape(-1, 3, 6, 6), (2, 2, 2, 2))
    for image, result in zip(padded, out.reshape(-1, 3, 6, 6)):
        windows = [image[:, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(result, w) for w in windows)
    assert not torch.equal(out, x)  # 25 offsets, 6 images: at least one moved


def test_augmentation_repeats_for_the_same_generator_state():
    x = torch.rand(10, 3, 8, 8)
    augment = Augmentation(flip=True, crop_padding=3, rotate_degrees=10, shear=0.3, scale=0.2, translate=0.05)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def centred_blobs(n: int, side: int = 33) -> torch.Tensor:
    """``n`` copies of a round Gaussian blob of ink at the centre of a ``side`` x ``side`` image."""
    axis = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 3.0 ** 2))
    return blob.expand(n, 1, side, side).float()


def centroids_and_spreads(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ink centroid (x, y) relative to the image centre, and the mean squared distance from it."""
    side = images.shape[-1]
    axis = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
    mass = images.sum((-2, -1))
    x = (images * axis).sum((-2, -1)) / mass
    y = (images * axis[:, None]).sum((-2, -1)) / mass
    spread = (images * (axis[None, :] ** 2 + axis[:, None] ** 2)).sum((-2, -1)) / mass
    return torch.cat([x, y], -1), spread.squeeze(-1)


def test_affine_distortions_rotate_shear_and_scale_about_the_centre_and_shift_by_at_most_translate():
    blobs = centred_blobs(64)
    _, spread = centroids_and_spreads(blobs)
    about_centre = Augmentation(flip=False, crop_padding=0, rotate_degrees=10, shear=0.3, scale=0.2, translate=0.0)
    out = about_centre(blobs, torch.Generator().manual_seed(0))
    centroid, new_spread = centroids_and_spreads(out)
    assert out.min() >= 0 and out.max() <= 1
    assert centroid.abs().max() < 0.05  # a linear map about the centre leaves the centroid there
    ratio = new_spread / spread  # each image its own draw: spreads differ, within the scales' range
    assert ratio.std() > 0.05 and ratio.min() > 0.8 ** 2 * 0.9 and ratio.max() < (1.2 * 1.3) ** 2

    shifting = Augmentation(flip=False, crop_padding=0, rotate_degrees=0, shear=0.0, scale=0.0, translate=0.1)
    centroid, _ = centroids_and_spreads(shifting(blobs, torch.Generator().manual_seed(0)))
    limit = 0.1 * 33
    assert centroid.abs().max() <= limit + 0.05 and centroid.abs().max() > limit / 2
    assert centroid.std(0).min() > limit / 4  # both axes, different shifts for different images


def test_every_split_is_normalised_with_the_training_statistics_and_only_training_is_augmented():
    sources = {"train": random_source(0), "val": None, "test": random_source(1)}
    plain_test = list(sources["test"].fixed_episodes(3, 0, "test", 2, 1, 1))
    prepare_images(sources, image_settings(normalize=True, flip=True, crop_padding=0))
    mean, std = sources["train"].channel_statistics()
    assert sources["test"].normalisation is sources["train"].normalisation
    assert sources["test"].augmentation is None and sources["train"].augmentation is not None
    for plain, prepared in zip(plain_test, sources["test"].fixed_episodes(3, 0, "test", 2, 1, 1)):
        torch.testing.assert_close(prepared.support_x, (plain.support_x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1))
    episode = sources["train"].sample(torch.Generator().manual_seed(0), 200, 2, 1, 1)
    pixels = episode.support_x.transpose(0, 2).reshape(3, -1)  # channels first
    # normalised training pixels: about zero mean and unit spread
    assert pixels.mean(1).abs().max() < 0.2 and ((pixels.std(1) - 1).abs() < 0.2).all()


def test_switched_off_nothing_changes():
    source = random_source(0)
    before = source.sample(torch.Generator().manual_seed(3), 4, 3, 1, 2)
    prepare_images({"train": source, "val": None, "test": None}, image_settings(False, False, 0))
    after = source.sample(torch.Generator().manual_seed(3), 4, 3, 1, 2)
    assert torch.equal(before.support_x, after.support_x) and source.augmentation is None
