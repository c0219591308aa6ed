"""Decoding photographs into the square uint8 arrays the caches hold."""
from __future__ import annotations

import numpy as np
from PIL import Image

from metarun.data.preprocess import Preprocessing


def square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """``image`` as size x size x 3 uint8 (grey and palette images converted; Lanczos resize): the
    preprocessing that checkpoints store for prediction (metarun predict), in the caches' layout."""
    return Preprocessing(size, 3).pixels(image).transpose(1, 2, 0)
