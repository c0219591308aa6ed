"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018): the two few-shot splits
of CIFAR-100's 100 classes, 600 32x32 RGB images each (the archive's train and test images
together, as both papers use them).

- CIFAR-FS: 64 / 16 / 20 classes drawn at random across the data set (the val and test lists
  below, from the authors' split files; train is the other 64).
- FC100: split by super-class, 12 / 4 / 4 super-classes = 60 / 20 / 20 classes, so no test class
  shares a super-class with a training class (the harder, less overlapping split).

The source is the official CIFAR-100 python archive, ``cifar-100-python.tar.gz`` (161 MB):
downloaded into ``data.root`` with its md5 checked, or read from there (the archive, or its
extracted ``cifar-100-python/`` folder). It is decoded once into the .npz cache. The archive's
members are pickles, read with Python's pickle module: only load files you trust.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from metarun.data.cache import cached_arrays, file_fingerprint, fingerprint
from metarun.data.download import OfficialArchive, locate_archive
from metarun.data.episodes import FewShotImageSource
from metarun.data.pickles import load_published_pickle
from metarun.errors import DataError

ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
OFFICIAL = OfficialArchive("CIFAR-100", ARCHIVE, ARCHIVE_MD5, FOLDER, "meta", "METARUN_DATA_DIR/cifar100")
MEMBERS = ("train", "test", "meta")
ARRAY_KEYS = ("images", "fine_labels", "coarse_labels", "fine_names", "coarse_names")
SPLITS = ("train", "val", "test")

# Bertinetto et al. 2019, CIFAR-FS split files (fine-label names as in the archive's meta)
CIFAR_FS_CLASSES = {
    "val": ("beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish",
            "lamp", "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor"),
    "test": ("baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck",
             "plain", "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone",
             "wardrobe", "whale", "woman", "worm"),
}
# Oreshkin et al. 2018 (TADAM), FC100: coarse-label (super-class) indices of each split
FC100_SUPERCLASSES = {"train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19), "val": (8, 11, 13, 16),
                      "test": (0, 7, 12, 14)}


def read_member(location: Path, member: str) -> dict:
    """One pickled member (``train``, ``test`` or ``meta``) of the archive or folder."""
    try:
        if location.is_dir():
            with open(location / member, "rb") as f:
                return load_published_pickle(f, str(location / member), encoding="latin1")
        with tarfile.open(location) as archive:
            handle = archive.extractfile(f"{FOLDER}/{member}")
            if handle is None:
                raise KeyError(member)
            return load_published_pickle(handle, f"{location}: {FOLDER}/{member}", encoding="latin1")
    except (OSError, KeyError, tarfile.TarError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"{location}: cannot read the CIFAR-100 member {FOLDER}/{member} "
                        f"({type(e).__name__}: {e}); expected the official python archive") from e


def read_cifar100(location: Path) -> dict[str, np.ndarray]:
    """All 60,000 images (N x 32 x 32 x 3 uint8) with fine and coarse labels and their names."""
    parts = [read_member(location, member) for member in MEMBERS]
    meta = parts[2]
    for member, part, keys in zip(MEMBERS, parts, (("data", "fine_labels", "coarse_labels"),) * 2
                                  + (("fine_label_names", "coarse_label_names"),)):
        if not isinstance(part, dict) or not set(keys) <= set(part):
            found = sorted(part) if isinstance(part, dict) else type(part).__name__
            raise DataError(f"{location}: member {member} should be a dict with {', '.join(keys)}; "
                            f"found {found}")
    pixels = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts[:2]])
    if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32:
        raise DataError(f"{location}: images should be rows of 3072 bytes; found {pixels.shape}")
    return {
        "images": pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
        "fine_labels": np.concatenate([np.asarray(p["fine_labels"]) for p in parts[:2]]),
        "coarse_labels": np.concatenate([np.asarray(p["coarse_labels"]) for p in parts[:2]]),
        "fine_names": np.array(meta["fine_label_names"]),
        "coarse_names": np.array(meta["coarse_label_names"]),
    }


def split_classes(arrays: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """The fine-label ids of each split of ``cifarfs`` or ``fc100``."""
    fine_names = [str(n) for n in arrays["fine_names"]]
    if name == "cifarfs":
        unknown = sorted(set(sum(CIFAR_FS_CLASSES.values(), ())) - set(fine_names))
        if unknown:
            raise DataError(f"CIFAR-100's label names lack the CIFAR-FS classes {unknown}")
        held_out = {split: np.sort([fine_names.index(c) for c in names])
                    for split, names in CIFAR_FS_CLASSES.items()}
        rest = np.setdiff1d(np.arange(len(fine_names)), np.concatenate(list(held_out.values())))
        return {"train": rest, **held_out}
    superclass_of = np.zeros(len(fine_names), dtype=np.int64)
    superclass_of[arrays["fine_labels"]] = arrays["coarse_labels"]
    return {split: np.flatnonzero(np.isin(superclass_of, superclasses))
            for split, superclasses in FC100_SUPERCLASSES.items()}


def build_cifar100_split(data_cfg, paths_cfg) -> dict[str, FewShotImageSource]:
    root = Path(data_cfg.root).expanduser()
    location = locate_archive(root, OFFICIAL, data_cfg.source != "local", f"{data_cfg.download_url}/{ARCHIVE}")
    cache_dir = Path(paths_cfg.cache_dir).expanduser()
    cache = cache_dir / f"cifar100_{fingerprint(file_fingerprint(location))}.npz"
    arrays = cached_arrays(cache, ARRAY_KEYS, lambda: read_cifar100(location))
    sources = {}
    for split, classes in split_classes(arrays, data_cfg.name).items():
        if len(classes) != data_cfg.classes[split]:
            raise DataError(f"{location}: the {data_cfg.name} {split} split should have "
                            f"{data_cfg.classes[split]} classes (data.classes); found {len(classes)}")
        keep = np.isin(arrays["fine_labels"], classes)
        labels = np.searchsorted(classes, arrays["fine_labels"][keep])  # 0..n-1 in class-id order
        counts = np.bincount(labels, minlength=len(classes))
        if (counts != data_cfg.images_per_class).any():
            raise DataError(f"{location}: expected {data_cfg.images_per_class} images per class "
                            f"(data.images_per_class); found {counts.min()} to {counts.max()}")
        sources[split] = FewShotImageSource.from_nhwc(arrays["images"][keep], labels)
    return sources
