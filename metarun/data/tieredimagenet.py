"""tiered-ImageNet (Ren et al. 2018): 608 ImageNet classes under 34 super-categories split 20 / 6 /
8, so 351 meta-training, 97 validation and 160 test classes, 779,165 images of 84x84 RGB.

It needs the ImageNet licence, so metarun never downloads it; ``data.root`` holds the files its
authors published, per split (train, val, test):

- ``{split}_labels.pkl``: a dict with ``label_specific`` (the class of every image, 0..C-1) and
  ``label_general`` (its super-category), and their names
- the images, either ``{split}_images_png.pkl`` (a list of PNG-encoded images, as published) or
  ``{split}_images.npz`` (``images``: N x 84 x 84 x 3 uint8, as the common decompression scripts
  write it; those decode with OpenCV, so channels are stored in OpenCV's order, which metarun keeps)

PNG images are decoded once into the .npz cache; the decompressed arrays are read as they are
(resized, and then cached, only for another ``data.image_size``). All three splits at 84x84 take
about 16.5 GB of memory. Pickles are read with Python's pickle module: only load files you trust.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from metarun.data.cache import cached_arrays, file_fingerprint, fingerprint
from metarun.data.episodes import FewShotImageSource
from metarun.data.images import square_rgb
from metarun.data.pickles import load_published_pickle
from metarun.errors import DataError

SPLITS = ("train", "val", "test")
PUBLISHED_SIZE = 84


def image_file(root: Path, split: str) -> Path:
    """The decompressed .npz when present (faster), else the published PNG pickle."""
    decoded = root / f"{split}_images.npz"
    return decoded if decoded.is_file() else root / f"{split}_images_png.pkl"


def check_files(root: Path) -> None:
    missing = [f"{split}_labels.pkl" for split in SPLITS if not (root / f"{split}_labels.pkl").is_file()]
    missing += [f"{split}_images_png.pkl (or {split}_images.npz)" for split in SPLITS
                if not image_file(root, split).is_file()]
    if missing:
        raise DataError(
            f"tiered-ImageNet not found in {root} (data.root). It needs the ImageNet licence, so metarun "
            f"does not download it; put the files of Ren et al. 2018 there: {{train,val,test}}_labels.pkl "
            f"and {{train,val,test}}_images_png.pkl (or the decompressed {{split}}_images.npz). "
            f"Missing: {', '.join(missing)}.")


def load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return load_published_pickle(f, str(path), encoding="latin1")  # written by Python 2
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
        raise DataError(f"{path} is not a readable pickle ({e})") from e


def read_labels(path: Path) -> np.ndarray:
    labels = load_pickle(path)
    if not isinstance(labels, dict) or "label_specific" not in labels:
        found = sorted(labels) if isinstance(labels, dict) else type(labels).__name__
        raise DataError(f"{path}: expected a dict with label_specific (a class per image); found {found}")
    return np.asarray(labels["label_specific"], dtype=np.int64)


def decode_pngs(path: Path, image_size: int) -> dict[str, np.ndarray]:
    encoded = load_pickle(path)
    if not isinstance(encoded, (list, tuple)):
        raise DataError(f"{path}: expected a list of PNG-encoded images; found {type(encoded).__name__}")
    pixels = []
    for i, png in enumerate(tqdm(encoded, desc=f"decoding {path.name}", unit="img")):
        try:
            with Image.open(io.BytesIO(np.asarray(png, dtype=np.uint8).tobytes())) as image:
                pixels.append(square_rgb(image, image_size))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: image {i} is not a readable PNG ({e})") from e
    return {"images": np.stack(pixels)}


def read_decoded(path: Path, image_size: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as stored:
            pixels = stored["images"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: expected an .npz with images (N x 84 x 84 x 3 uint8) ({e})") from e
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise DataError(f"{path}: expected images of N x H x W x 3 uint8; found {pixels.dtype} {pixels.shape}")
    if pixels.shape[1:3] != (image_size, image_size):
        pixels = np.stack([square_rgb(Image.fromarray(p), image_size) for p in pixels])
    return {"images": pixels}


def load_images(root: Path, cache_dir: Path, split: str, image_size: int) -> np.ndarray:
    path = image_file(root, split)
    if path.suffix == ".npz" and image_size == PUBLISHED_SIZE:
        return read_decoded(path, image_size)["images"]
    reader = decode_pngs if path.suffix == ".pkl" else read_decoded
    key = fingerprint(str(image_size), file_fingerprint(path))
    cache = cache_dir / f"tieredimagenet_{split}_{image_size}px_{key}.npz"
    return cached_arrays(cache, ("images",), lambda: reader(path, image_size))["images"]


def build_tieredimagenet(data_cfg, paths_cfg) -> dict[str, FewShotImageSource]:
    root = Path(data_cfg.root).expanduser()
    cache_dir = Path(paths_cfg.cache_dir).expanduser()
    check_files(root)
    sources = {}
    for split in SPLITS:
        labels = read_labels(root / f"{split}_labels.pkl")
        images = load_images(root, cache_dir, split, data_cfg.image_size)
        expected = (data_cfg.classes[split], data_cfg.images[split])
        found = (len(np.unique(labels)), len(labels))
        if found != expected or len(images) != len(labels) or labels.min() != 0 or labels.max() != found[0] - 1:
            raise DataError(
                f"{root}: the {split} split should have {expected[0]} classes labelled 0..{expected[0] - 1} "
                f"and {expected[1]} images (data.classes, data.images; Ren et al.'s split); "
                f"{split}_labels.pkl has {found[0]} classes ({labels.min()}..{labels.max()}) and "
                f"{found[1]} labels, {image_file(root, split).name} {len(images)} images")
        sources[split] = FewShotImageSource.from_nhwc(images, labels)
    return sources
