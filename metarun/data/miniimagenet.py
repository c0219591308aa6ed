"""mini-ImageNet (Vinyals et al. 2016) in the class split of Ravi & Larochelle (2017): 64
meta-training, 16 validation and 20 test classes of 600 images each, 84x84 RGB.

Its images need the ImageNet licence, so metarun never downloads them; it reads the two layouts
researchers have on disk, in ``data.root``:

- ``train.csv``, ``val.csv``, ``test.csv`` (header ``filename,label``, one row per image) and an
  ``images/`` folder with those files (Ravi & Larochelle's layout; images of any size, resized)
- ``mini-imagenet-cache-{train,val,test}.pkl``: pickled dicts with ``image_data`` (N x H x W x 3
  uint8) and ``class_dict`` ({class name: [indices into image_data]})

Either is decoded once into the .npz cache under ``paths.cache_dir``. Pickles are read with
Python's pickle module: only load files you trust.
"""
from __future__ import annotations

import csv
import pickle
from functools import partial
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
PICKLE = "mini-imagenet-cache-{}.pkl"
ARRAY_KEYS = ("images", "labels", "class_names")


def layout(root: Path) -> str:
    """``pickle`` or ``csv``: which of the two layouts ``root`` holds (pickles first: decoded)."""
    pickles = [root / PICKLE.format(s) for s in SPLITS]
    csvs = [root / f"{s}.csv" for s in SPLITS]
    if all(p.is_file() for p in pickles):
        return "pickle"
    if all(p.is_file() for p in csvs) and (root / "images").is_dir():
        return "csv"
    missing_pickles = [p.name for p in pickles if not p.is_file()]
    missing_csv = [p.name for p in csvs if not p.is_file()] + ([] if (root / "images").is_dir() else ["images/"])
    raise DataError(
        f"mini-ImageNet not found in {root} (data.root). It needs the ImageNet licence, so metarun "
        f"does not download it; put one of these layouts there: (1) train.csv, val.csv, test.csv "
        f"(filename,label) and images/ (missing: {', '.join(missing_csv)}), or (2) "
        f"{', '.join(PICKLE.format(s) for s in SPLITS)} (missing: {', '.join(missing_pickles)}).")


def read_csv_split(root: Path, split: str, image_size: int) -> dict[str, np.ndarray]:
    table = root / f"{split}.csv"
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{table}: expected a header 'filename,label', found {rows[0] if rows else 'nothing'}")
    rows = [r for r in rows[1:] if r]
    names = sorted({label for _, label in rows})
    index = {name: i for i, name in enumerate(names)}
    images = []
    for filename, _ in tqdm(rows, desc=f"decoding mini-ImageNet {split}", unit="img"):
        path = root / "images" / filename
        try:
            with Image.open(path) as image:
                images.append(square_rgb(image, image_size))
        except (OSError, ValueError) as e:
            raise DataError(f"{path} (listed in {table}) is missing or not an image: {e}") from e
    return {"images": np.stack(images), "labels": np.array([index[label] for _, label in rows]),
            "class_names": np.array(names)}


def read_pickle_split(path: Path, image_size: int) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            data = load_published_pickle(f, str(path))
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise DataError(f"{path} is not a readable pickle ({e})") from e
    expected = "a dict with image_data (N x H x W x 3 uint8) and class_dict ({class: [indices]})"
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        raise DataError(f"{path}: expected {expected}, found {type(data).__name__} "
                        f"{sorted(data) if isinstance(data, dict) else ''}")
    pixels = np.asarray(data["image_data"])
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise DataError(f"{path}: expected {expected}; image_data is {pixels.dtype} {pixels.shape}")
    names = sorted(data["class_dict"])
    labels = np.full(len(pixels), -1)
    for i, name in enumerate(names):
        labels[np.asarray(data["class_dict"][name], dtype=np.int64)] = i
    keep = labels >= 0
    if pixels.shape[1:3] != (image_size, image_size):
        pixels = np.stack([square_rgb(Image.fromarray(p), image_size) for p in pixels[keep]])
    else:
        pixels = pixels[keep]
    return {"images": pixels, "labels": labels[keep], "class_names": np.array(names)}


def load_split(data_cfg, root: Path, cache_dir: Path, kind: str, split: str) -> dict[str, np.ndarray]:
    size = data_cfg.image_size
    if kind == "pickle":
        source = root / PICKLE.format(split)
        key = fingerprint("pickle", str(size), file_fingerprint(source))
        build = partial(read_pickle_split, source, size)
    else:
        source = root / f"{split}.csv"
        key = fingerprint("csv", str(size), file_fingerprint(source), file_fingerprint(root / "images"))
        build = partial(read_csv_split, root, split, size)
    arrays = cached_arrays(cache_dir / f"miniimagenet_{split}_{size}px_{key}.npz", ARRAY_KEYS, build)
    check_counts(arrays, source, data_cfg.classes[split], data_cfg.images_per_class)
    return arrays


def check_counts(arrays, source: Path, classes: int, images_per_class: int) -> None:
    counts = np.bincount(arrays["labels"], minlength=len(arrays["class_names"]))
    if len(counts) != classes:
        raise DataError(f"{source}: expected {classes} classes (Ravi & Larochelle's split; "
                        f"data.classes), found {len(counts)}")
    short = [str(n) for n, c in zip(arrays["class_names"], counts) if c != images_per_class]
    if short:
        raise DataError(f"{source}: expected {images_per_class} images per class "
                        f"(data.images_per_class); {len(short)} classes differ, e.g. {short[0]} "
                        f"with {counts[list(arrays['class_names']).index(short[0])]}")


def build_miniimagenet(data_cfg, paths_cfg) -> dict[str, FewShotImageSource]:
    root = Path(data_cfg.root).expanduser()
    cache_dir = Path(paths_cfg.cache_dir).expanduser()
    kind = layout(root)
    sources = {}
    for split in SPLITS:
        arrays = load_split(data_cfg, root, cache_dir, kind, split)
        sources[split] = FewShotImageSource.from_nhwc(arrays["images"], arrays["labels"])
    return sources
