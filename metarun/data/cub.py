"""CUB-200-2011 (Wah et al. 2011) in the few-shot split of Chen et al. 2019: the 200 bird species
sorted by folder name, class i for meta-training when i % 2 == 0 (100 classes), validation when
i % 4 == 1 (50), test when i % 4 == 3 (50); 11,788 photographs, 41 to 60 a species.

The source is the official ``CUB_200_2011.tgz`` (md5 checked): downloaded into ``data.root``, or
read from there (the archive, or the ``CUB_200_2011/`` folder extracted from it). Images are
decoded once, squared to ``data.image_size`` (Lanczos, no crop), into the .npz cache.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from metarun.data.cache import cached_arrays, file_fingerprint, fingerprint
from metarun.data.download import OfficialArchive, locate_archive
from metarun.data.episodes import FewShotImageSource
from metarun.data.images import square_rgb
from metarun.errors import DataError

ARCHIVE = "CUB_200_2011.tgz"
ARCHIVE_MD5 = "97eceeb196236b17998738112f37df78"
FOLDER = "CUB_200_2011"
ARRAY_KEYS = ("images", "labels", "class_names")
SPLIT_OF_REMAINDER = {0: "train", 2: "train", 1: "val", 3: "test"}  # class index % 4
OFFICIAL = OfficialArchive("CUB-200-2011", ARCHIVE, ARCHIVE_MD5, FOLDER, "images", "METARUN_DATA_DIR/cub")


def image_files(location: Path):
    """(class folder name, opened image) of every image under images/, archive or folder."""
    if location.is_dir():
        for path in sorted((location / "images").glob("*/*")):
            if path.is_file() and not path.name.startswith("."):
                with Image.open(path) as image:
                    yield path.parent.name, image
        return
    with tarfile.open(location) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if member.isfile() and parts[:2] == (FOLDER, "images") and len(parts) == 4 \
                    and not parts[3].startswith("."):
                with Image.open(archive.extractfile(member)) as image:
                    yield parts[2], image


def read_cub(location: Path, image_size: int) -> dict[str, np.ndarray]:
    pixels, folders = [], []
    try:
        for folder, image in tqdm(image_files(location), desc="decoding CUB-200-2011", unit="img"):
            pixels.append(square_rgb(image, image_size))
            folders.append(folder)
    except (OSError, tarfile.TarError, ValueError) as e:
        raise DataError(f"{location}: not a readable CUB-200-2011 archive or folder ({e})") from e
    names = sorted(set(folders))
    index = {name: i for i, name in enumerate(names)}
    if not pixels:
        raise DataError(f"{location}: no images under {FOLDER}/images/<class>/")
    return {"images": np.stack(pixels), "labels": np.array([index[f] for f in folders]),
            "class_names": np.array(names)}


def build_cub(data_cfg, paths_cfg) -> dict[str, FewShotImageSource]:
    root = Path(data_cfg.root).expanduser()
    location = locate_archive(root, OFFICIAL, data_cfg.source != "local", data_cfg.download_url)
    key = fingerprint(str(data_cfg.image_size), file_fingerprint(location))
    cache = Path(paths_cfg.cache_dir).expanduser() / f"cub_{data_cfg.image_size}px_{key}.npz"
    arrays = cached_arrays(cache, ARRAY_KEYS, lambda: read_cub(location, data_cfg.image_size))
    n_classes, n_images = len(arrays["class_names"]), len(arrays["labels"])
    if (n_classes, n_images) != (data_cfg.classes, data_cfg.images):
        raise DataError(f"{location}: expected {data_cfg.classes} classes and {data_cfg.images} images "
                        f"(data.classes, data.images); found {n_classes} and {n_images}")
    split_of_class = np.array([SPLIT_OF_REMAINDER[i % 4] for i in range(n_classes)])
    sources = {}
    for split in ("train", "val", "test"):
        classes = np.flatnonzero(split_of_class == split)
        keep = np.isin(arrays["labels"], classes)
        labels = np.searchsorted(classes, arrays["labels"][keep])
        sources[split] = FewShotImageSource.from_nhwc(arrays["images"][keep], labels)
    return sources
