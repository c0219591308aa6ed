"""Meta-training augmentation of image episodes: random horizontal flips and random crops of the
zero-padded image, drawn from the episode generator, so a resumed run repeats them exactly.
Validation and test episodes are never augmented."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    flip: bool  # mirror each image left-right with probability 1/2
    crop_padding: int  # pad by this many zero pixels, then crop back at a random offset (0: off)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x``: images [..., C, H, W] in [0, 1]; each image gets its own draw."""
        images = x.reshape(-1, *x.shape[-3:])
        n, channels, height, width = images.shape
        if self.flip:
            mirrored = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(-1), images)
        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(images, (p, p, p, p))
            top, left = (torch.randint(0, 2 * p + 1, (2, n), generator=generator)).to(images.device)
            rows = (top[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
            cols = (left[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
            images = padded[torch.arange(n, device=images.device)[:, None, None, None],
                            torch.arange(channels, device=images.device)[None, :, None, None], rows, cols]
        return images.reshape(x.shape)

    @property
    def active(self) -> bool:
        return self.flip or self.crop_padding > 0
