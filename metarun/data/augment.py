"""Meta-training augmentation of image episodes: random horizontal flips, random affine
distortions (rotation, shear, scale, translation, as Koch et al. 2015 distort Omniglot) and random
crops of the zero-padded image, all drawn from the episode generator, so a resumed run repeats
them exactly. Validation and test episodes are never augmented."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    flip: bool  # mirror each image left-right with probability 1/2
    rotate_degrees: float  # rotate by an angle drawn from [-rotate_degrees, rotate_degrees]
    shear: float  # shear along each axis by a factor drawn from [-shear, shear]
    scale: float  # scale each axis by a factor drawn from [1 - scale, 1 + scale]
    translate: float  # shift along each axis by a fraction of the side drawn from [-translate, translate]
    crop_padding: int  # pad by this many zero pixels, then crop back at a random offset (0: off)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x``: images [..., C, H, W] in [0, 1] (0: background); each image gets its own draw."""
        images = x.reshape(-1, *x.shape[-3:])
        n, channels, height, width = images.shape
        if self.flip:
            mirrored = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(-1), images)
        if self.distorts:
            images = self.distort(images, generator)
        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(images, (p, p, p, p))
            top, left = (torch.randint(0, 2 * p + 1, (2, n), generator=generator)).to(images.device)
            rows = (top[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
            cols = (left[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
            images = padded[torch.arange(n, device=images.device)[:, None, None, None],
                            torch.arange(channels, device=images.device)[None, :, None, None], rows, cols]
        return images.reshape(x.shape)

    def distort(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image resampled (bilinear, zeros outside) through its own random affine map
        rotation x shear x scale plus a shift, about the image centre."""
        n = len(images)
        unit = torch.rand(n, 7, generator=generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1]
        angle = unit[:, 0] * math.radians(self.rotate_degrees)
        shear_x, shear_y = unit[:, 1] * self.shear, unit[:, 2] * self.shear
        scale_x, scale_y = 1 + unit[:, 3] * self.scale, 1 + unit[:, 4] * self.scale
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        one = torch.ones_like(angle)
        shearing = torch.stack([torch.stack([one, shear_x], -1), torch.stack([shear_y, one], -1)], -2)
        scaling = torch.diag_embed(torch.stack([scale_x, scale_y], -1))
        shift = unit[:, 5:] * 2 * self.translate  # the image spans [-1, 1]: a side is 2 units
        maps = torch.cat([rotation @ shearing @ scaling, shift.unsqueeze(-1)], -1)
        grid = F.affine_grid(maps.to(images), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @property
    def distorts(self) -> bool:
        return any((self.rotate_degrees, self.shear, self.scale, self.translate))

    @property
    def active(self) -> bool:
        return self.flip or self.distorts or self.crop_padding > 0
