"""Your own images (``data=folder data.root=DIR``): one folder per class, split into train / val / test.

    DIR/cat/001.jpg, DIR/cat/002.png, ...        a class is a folder that holds images
    DIR/animals/cat/001.jpg                       class folders may be grouped (class "animals/cat")
    DIR/train.txt, val.txt, test.txt              optional: the classes of each split, one a line

Without the lists, classes are ranked by a hash of (``data.split_seed``, class name) and the first
``data.fractions.test`` of them test, the next ``data.fractions.val`` validate and the rest train:
a seeded split that no library version can change. Images are decoded once, with the
``Preprocessing`` a checkpoint stores for prediction, into a cache keyed by the files (path, size,
modification time). Nothing is skipped quietly: an unreadable image, an empty class folder or a
class in two lists is an error that names it.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from metarun.data.cache import cached_arrays, fingerprint
from metarun.data.episodes import FewShotImageSource, seeded_rank
from metarun.data.preprocess import IMAGE_SUFFIXES, Preprocessing, UnreadableImageFile
from metarun.errors import ConfigError, DataError

log = logging.getLogger("metarun")

SPLITS = ("train", "val", "test")
LIST_FILES = tuple(f"{s}.txt" for s in SPLITS)
ARRAY_KEYS = ("images", "labels", "class_names", "files")
LAYOUT = "DIR/<class>/<image> (or DIR/<group>/<class>/<image>)"


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass
class FolderScan:
    """The classes of a folder tree (name: relative posix path of the class folder) with their
    image files, sorted; ``other_files``: files that are not images (not read)."""

    root: Path
    classes: dict[str, list[Path]]
    other_files: list[Path] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(len(files) for files in self.classes.values())


def scan_folder(root: Path) -> FolderScan:
    """The class folders under ``root``; a ``DataError`` naming the folder for an empty tree, an
    empty class folder, images directly in ``root``, or a folder holding both images and classes."""
    if not root.is_dir():
        raise DataError(f"{root} (data.root) is not a folder; data=folder reads a class-per-folder tree: "
                        f"{LAYOUT}")
    classes: dict[str, list[Path]] = {}
    other: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        files = [here / n for n in sorted(names) if not n.startswith(".")]
        images = [f for f in files if is_image(f)]
        other += [f for f in files if not is_image(f) and not (here == root and f.name in LIST_FILES)]
        if here == root:
            if images:
                raise DataError(f"{root} holds images directly ({images[0].name}...): put each class's "
                                f"images in a folder of its own: {LAYOUT}")
            continue
        name = here.relative_to(root).as_posix()
        if images and subfolders:
            raise DataError(f"{here} holds images and folders ({subfolders[0]}/): a folder is either a "
                            f"class (images) or a group of classes (folders), not both")
        if images:
            classes[name] = images
        elif not subfolders:
            raise DataError(f"{here} holds no images ({', '.join(IMAGE_SUFFIXES)}): remove the folder or "
                            "add its images")
    if not classes:
        raise DataError(f"{root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)}); "
                        f"expected {LAYOUT}")
    return FolderScan(root, dict(sorted(classes.items())), other)


def read_class_lists(root: Path, classes: list[str]) -> dict[str, list[str]] | None:
    """The classes of each split from ``train.txt``, ``val.txt`` (optional) and ``test.txt``, or
    None when the folder has neither train.txt nor test.txt."""
    present = [s for s in SPLITS if (root / f"{s}.txt").is_file()]
    if not present:
        return None
    for needed in ("train", "test"):
        if needed not in present:
            raise DataError(f"{root} has {', '.join(f'{s}.txt' for s in present)} but no {needed}.txt: "
                            "the class lists need train.txt and test.txt (val.txt is optional)")
    known, owner, split = set(classes), {}, {}
    for s in SPLITS:
        listed = []
        path = root / f"{s}.txt"
        lines = path.read_text().splitlines() if path.is_file() else []
        for number, line in enumerate(lines, 1):
            name = line.strip().strip("/")
            if not name or name.startswith("#"):
                continue
            if name not in known:
                raise DataError(f"{path}:{number}: no class folder {root / name} with images")
            if name in owner:
                raise DataError(f"{path}:{number}: class {name} is in {owner[name]}.txt too; a class "
                                "belongs to one split")
            owner[name] = s
            listed.append(name)
        split[s] = listed
    unlisted = [c for c in classes if c not in owner]
    if unlisted:
        log.warning(f"{len(unlisted)} class folder(s) of {root} are in none of the class lists and are "
                    f"not used (e.g. {unlisted[0]})")
    return split


def seeded_fraction_split(classes: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """Classes ranked by sha256(seed:name): ``round(test x n)`` test, ``round(val x n)`` validate,
    the rest train (at least one class in train and in test)."""
    n = len(classes)
    ranked = [classes[i] for i in seeded_rank(classes, seed)]
    n_test, n_val = round(fractions.test * n), round(fractions.val * n)
    if n_test < 1 or n - n_test - n_val < 1:
        raise ConfigError("data.fractions", {"val": fractions.val, "test": fractions.test},
                          f"fractions that leave at least one class to train and one to test: the folder "
                          f"has {n} classes, so this gives {n - n_test - n_val} train, {n_val} val, "
                          f"{n_test} test")
    return {"test": sorted(ranked[:n_test]), "val": sorted(ranked[n_test:n_test + n_val]),
            "train": sorted(ranked[n_test + n_val:])}


def check_fractions(fractions) -> None:
    values = {k: fractions.get(k) for k in ("val", "test")}
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values.values()) or \
            sum(values.values()) >= 1:
        raise ConfigError("data.fractions", values, "val and test fractions of the classes that are >= 0 and "
                          "sum to less than 1 (the rest meta-train)")


def split_classes(data_cfg, scan: FolderScan, fixed: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The classes of each split: ``fixed`` (the split a checkpoint was trained with), the folder's
    class lists, or the seeded fractions (``data.split``: auto, lists or fractions)."""
    names = list(scan.classes)
    if fixed is not None:
        missing = [c for s in SPLITS for c in fixed.get(s, []) if c not in scan.classes]
        if missing:
            raise DataError(f"{len(missing)} class(es) of the split this run was trained with are not in "
                            f"{scan.root} any more (e.g. {missing[0]}); restore them, or start a new run")
        return {s: list(fixed.get(s, [])) for s in SPLITS}
    lists = read_class_lists(scan.root, names) if data_cfg.split != "fractions" else None
    if lists is not None:
        return lists
    if data_cfg.split == "lists":
        raise DataError(f"data.split=lists but {scan.root} has no train.txt / test.txt")
    check_fractions(data_cfg.fractions)
    return seeded_fraction_split(names, data_cfg.fractions, data_cfg.split_seed)


def decode_images(files: list[Path], preprocessing: Preprocessing, workers: int = 4,
                  desc: str = "decoding") -> tuple[np.ndarray | None, list[str]]:
    """The pixels of ``files`` [N, C, S, S] (None if any failed) and the failures, one line each.
    Decoding runs on threads (Pillow releases the GIL while it decodes and resizes)."""
    def read(path: Path):
        try:
            return preprocessing.read(path)
        except UnreadableImageFile as e:
            return str(e)

    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(files), desc=desc, unit="img") as bar:
        decoded = []
        for result in pool.map(read, files, chunksize=64):
            decoded.append(result)
            bar.update()
    failures = [r for r in decoded if isinstance(r, str)]
    return (None if failures else np.stack(decoded)), failures


def decode_folder(scan: FolderScan, data_cfg) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    """Every image of ``scan`` decoded: the arrays (``images`` [N, C, S, S] uint8, ``labels`` into
    ``class_names``, ``files`` relative to the root), or None and the unreadable files."""
    files = [f for class_files in scan.classes.values() for f in class_files]
    labels = np.repeat(np.arange(len(scan.classes)), [len(v) for v in scan.classes.values()])
    channels = 3 if data_cfg.channels == "auto" else int(data_cfg.channels)
    images, failures = decode_images(files, Preprocessing(data_cfg.image_size, channels, bool(data_cfg.invert)),
                                     desc=f"decoding {scan.root.name} at {data_cfg.image_size}px")
    if images is None:
        return None, failures
    if data_cfg.channels == "auto" and (images == images[:, :1]).all():
        images = np.ascontiguousarray(images[:, :1])  # every image grey: one channel (as convert("L") gives)
    return {"images": images, "labels": labels, "class_names": np.array(list(scan.classes)),
            "files": np.array([f.relative_to(scan.root).as_posix() for f in files])}, []


def unreadable_message(root: Path, failures: list[str]) -> str:
    return (f"{len(failures)} file(s) in {root} do not decode as images: {failures[0]}"
            + (f" (and {len(failures) - 1} more; metarun-data check folder data.root={root} lists them)"
               if len(failures) > 1 else "") + "; remove or replace them")


def load_folder(data_cfg, scan: FolderScan, cache_dir: Path) -> dict[str, np.ndarray]:
    """The decoded folder, from the cache when its files are unchanged."""
    stats = [f"{f.relative_to(scan.root).as_posix()}|{s.st_size}|{s.st_mtime_ns}"
             for files in scan.classes.values() for f in files for s in (f.stat(),)]
    key = fingerprint(str(scan.root.resolve()), str(data_cfg.image_size), str(data_cfg.channels),
                      str(bool(data_cfg.invert)), *stats)

    def build() -> dict[str, np.ndarray]:
        arrays, failures = decode_folder(scan, data_cfg)
        if arrays is None:
            raise DataError(unreadable_message(scan.root, failures))
        return arrays

    return cached_arrays(cache_dir / f"folder_{scan.root.name}_{data_cfg.image_size}px_{key}.npz",
                         ARRAY_KEYS, build)


def build_folder(data_cfg, paths_cfg, fixed_split: dict[str, list[str]] | None = None
                 ) -> dict[str, FewShotImageSource | None]:
    root = Path(data_cfg.root).expanduser()
    scan = scan_folder(root)
    if scan.other_files:
        log.warning(f"{len(scan.other_files)} file(s) of {root} are not images ({', '.join(IMAGE_SUFFIXES)}) "
                    f"and are not read (e.g. {scan.other_files[0]})")
    split = split_classes(data_cfg, scan, fixed_split)
    arrays = load_folder(data_cfg, scan, Path(paths_cfg.cache_dir).expanduser())
    images = torch.from_numpy(arrays["images"])
    index = {str(name): i for i, name in enumerate(arrays["class_names"])}
    order = np.argsort(arrays["labels"], kind="stable")
    starts = np.searchsorted(arrays["labels"][order], np.arange(len(index) + 1))
    sources: dict[str, FewShotImageSource | None] = {}
    for name in SPLITS:
        if not split[name]:
            sources[name] = None
            continue
        class_images = [torch.from_numpy(order[starts[index[c]]:starts[index[c] + 1]].astype(np.int64))
                        for c in split[name]]
        source = FewShotImageSource(images, class_images)
        source.class_names = list(split[name])
        sources[name] = source
    return sources
