"""How an image file becomes what a learner reads: one definition for training and for prediction.

A checkpoint stores its data set's ``Preprocessing`` (``as_dict``), so ``metarun predict`` and
``metarun.load`` turn a user's files into exactly the arrays the learner was trained on: the same
square resize, channels, ink inversion and per-channel normalisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metarun.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# data sets stored as ink intensity (strokes bright on a dark ground) rather than as photographed
INK_DATASETS = ("omniglot",)


class UnreadableImageFile(DataError):
    """A file that is missing or does not decode as an image."""


@dataclass(frozen=True)
class Preprocessing:
    """``image_size``: the side of the square the image is resized to (Lanczos); ``channels``: 1
    (grey) or 3 (RGB); ``invert``: 255 - value (Omniglot's ink intensity); ``mean`` / ``std``:
    per-channel normalisation of values in [0, 1] (None: none)."""

    image_size: int
    channels: int
    invert: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(values["image_size"], values["channels"], values["invert"],
                   None if values["mean"] is None else tuple(values["mean"]),
                   None if values["std"] is None else tuple(values["std"]))

    def with_normalisation(self, normalisation: tuple[torch.Tensor, torch.Tensor] | None) -> "Preprocessing":
        if normalisation is None:
            return Preprocessing(self.image_size, self.channels, self.invert)
        mean, std = normalisation
        return Preprocessing(self.image_size, self.channels, self.invert,
                             tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def pixels(self, image: Image.Image) -> np.ndarray:
        """``image`` as uint8 [channels, image_size, image_size], before normalisation."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.uint8)
        if self.invert:
            array = 255 - array
        return array[None] if self.channels == 1 else array.transpose(2, 0, 1)

    def read(self, path: Path) -> np.ndarray:
        """The pixels of the image file ``path``; ``UnreadableImageFile`` names it when it does not decode."""
        try:
            with Image.open(path) as image:
                image.load()
                return self.pixels(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableImageFile(f"{path} is not a readable image ({e})") from e

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Values in [0, 1], [..., C, H, W], as the learner reads them."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def tensor(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 pixels [N, C, H, W] (from ``pixels``) as the learner's float input."""
        x = torch.as_tensor(pixels)
        return self.normalise(x.float().div_(255.0))


def preprocessing_of(data_cfg, image_shape: tuple[int, ...]) -> Preprocessing:
    """The preprocessing of the benchmark or folder that ``data_cfg`` names, whose images have
    ``image_shape`` (C, H, W); its normalisation is set from the meta-training split's statistics."""
    invert = bool(data_cfg.get("invert", data_cfg.name in INK_DATASETS))
    return Preprocessing(image_shape[-1], image_shape[0], invert)
