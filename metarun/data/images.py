"""Decoding photographs into the square uint8 arrays the caches hold."""
from __future__ import annotations

import numpy as np
from PIL import Image


def square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """``image`` as size x size x 3 uint8 (grey and palette images converted; Lanczos resize)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)
