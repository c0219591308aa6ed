"""Omniglot: where the images come from (package copy, user folder, download) and the splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from metarun.data.cache import cached_arrays, file_fingerprint, fingerprint
from metarun.data.download import fetch, file_digest
from metarun.data.episodes import FewShotImageSource, seeded_rank
from metarun.data.omniglot_archive import SUBSETS, locate, read_omniglot
from metarun.errors import ConfigError, DataError

EMBEDDED = Path(__file__).parent / "assets" / "omniglot28.npz"
# Written by scripts/build_embedded_omniglot.py; checked on every load of the package copy.
EMBEDDED_SHA256 = "646f63b1e424b74e09aeec91a6cd2beade1b777173ed77dc29e6a982945d18b2"
EMBEDDED_SIZE = 28
ARRAY_KEYS = ("images", "character", "drawer", "character_names", "background")
VINYALS_TEST_CHARACTERS = 423
TOTAL_IMAGES = sum(s.images for s in SUBSETS)


def resolve_source(data_cfg) -> str:
    source, size = data_cfg.source, data_cfg.image_size
    if source == "auto":
        return "embedded" if size == EMBEDDED_SIZE else "download"
    if source == "embedded" and size != EMBEDDED_SIZE:
        raise ConfigError("data.source", source,
                          f"the package copy is {EMBEDDED_SIZE}x{EMBEDDED_SIZE}; for data.image_size="
                          f"{size} use data.source=download or data.source=local")
    return source


def load_embedded(path: Path = EMBEDDED, sha256: str = EMBEDDED_SHA256) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"the package copy of Omniglot is missing ({path}): reinstall metarun, "
                        "or use data.source=download")
    got = file_digest(path, "sha256")
    if got != sha256:
        raise DataError(f"the package copy of Omniglot is corrupt ({path}: sha256 {got}, expected "
                        f"{sha256}): reinstall metarun, or use data.source=download")
    with np.load(path) as stored:
        return {k: stored[k] for k in ARRAY_KEYS}


def missing_files_message(root: Path, missing, download_url: str, reason: str) -> str:
    lines = [f"Omniglot is incomplete in {root} ({reason}). Put these files in {root}/ "
             "(or the folders they extract to), then run again:"]
    for subset in missing:
        lines.append(f"  {subset.name}.zip  from {download_url}/{subset.name}.zip  (md5 {subset.md5})")
    lines.append("Or set METARUN_DATA_DIR (or paths.data_dir) to a folder whose omniglot/ holds them; "
                 "data.source=embedded needs no files (28x28 only).")
    return "\n".join(lines)


def ensure_files(root: Path, allow_download: bool, download_url: str) -> None:
    missing = [s for s in SUBSETS if locate(root, s) is None]
    if not missing:
        return
    if not allow_download:
        raise DataError(missing_files_message(root, missing, download_url,
                                              "not found, and data.source=local never downloads"))
    for subset in missing:
        try:
            fetch(f"{download_url}/{subset.name}.zip", root / f"{subset.name}.zip", "md5", subset.md5)
        except OSError as e:
            raise DataError(missing_files_message(root, missing, download_url,
                                                  f"download failed: {e}")) from e


def load_cached(root: Path, cache_dir: Path, image_size: int, allow_download: bool,
                download_url: str) -> dict[str, np.ndarray]:
    ensure_files(root, allow_download, download_url)
    key = fingerprint(str(image_size), *(file_fingerprint(locate(root, s)) for s in SUBSETS))
    cache = cache_dir / f"omniglot_{image_size}px_{key}.npz"

    def decode() -> dict[str, np.ndarray]:
        with tqdm(total=TOTAL_IMAGES, desc=f"decoding Omniglot at {image_size}px", unit="img") as bar:
            return read_omniglot(root, image_size, progress=bar)

    return cached_arrays(cache, ARRAY_KEYS, decode)


def load_arrays(data_cfg, paths_cfg) -> dict[str, np.ndarray]:
    source = resolve_source(data_cfg)
    if source == "embedded":
        return load_embedded()
    root = Path(paths_cfg.data_dir).expanduser() / "omniglot"
    cache_dir = Path(paths_cfg.cache_dir).expanduser()
    return load_cached(root, cache_dir, data_cfg.image_size, source == "download",
                       data_cfg.download_url)


def split_characters(arrays, split: str, val_characters: int, split_seed: int) -> dict[str, np.ndarray]:
    """Character indices of each split (``val`` empty when ``val_characters`` is 0)."""
    names = arrays["character_names"]
    if split == "vinyals":
        pool = np.arange(len(names) - VINYALS_TEST_CHARACTERS)
        test = np.arange(len(names) - VINYALS_TEST_CHARACTERS, len(names))
    elif split == "lake":
        pool, test = np.flatnonzero(arrays["background"]), np.flatnonzero(~arrays["background"])
    else:
        raise ConfigError("data.split", split, "one of vinyals, lake")
    if not 0 <= val_characters < len(pool):
        raise ConfigError("data.val_characters", val_characters,
                          f"an integer from 0 to {len(pool) - 1} (the {split} split meta-trains on "
                          f"{len(pool)} characters)")
    shuffled = pool[seeded_rank(names[pool], split_seed)]
    return {"train": np.sort(shuffled[val_characters:]),
            "val": np.sort(shuffled[:val_characters]),
            "test": test}


def build_omniglot(data_cfg, paths_cfg) -> dict[str, FewShotImageSource | None]:
    arrays = load_arrays(data_cfg, paths_cfg)
    images = torch.from_numpy(arrays["images"]).unsqueeze(1)  # N, 1, S, S
    by_character = np.argsort(arrays["character"], kind="stable")
    starts = np.searchsorted(arrays["character"][by_character], np.arange(len(arrays["character_names"]) + 1))
    rotations = (0, 1, 2, 3) if data_cfg.rotations else (0,)
    sources: dict[str, FewShotImageSource | None] = {}
    split = split_characters(arrays, data_cfg.split, data_cfg.val_characters, data_cfg.split_seed)
    for name, characters in split.items():
        if len(characters) == 0:
            sources[name] = None
            continue
        class_images, class_rotation = [], []
        for c in characters:
            idx = torch.from_numpy(by_character[starts[c]:starts[c + 1]].astype(np.int64))
            for k in rotations:
                class_images.append(idx)
                class_rotation.append(k)
        sources[name] = FewShotImageSource(images, class_images, torch.tensor(class_rotation))
    if data_cfg.train_task_classes == "same_alphabet":
        sources["train"].class_group = alphabet_groups(arrays["character_names"], split["train"], len(rotations))
    return sources


def alphabet_groups(character_names, characters: np.ndarray, n_rotations: int) -> torch.Tensor:
    """The group id of each class that ``build_omniglot`` makes of ``characters`` (each character
    once per rotation, in that order): one group per (alphabet, rotation)."""
    alphabets = sorted({str(character_names[c]).split("/")[0] for c in characters})
    index = {a: i for i, a in enumerate(alphabets)}
    return torch.tensor([index[str(character_names[c]).split("/")[0]] * n_rotations + k
                         for c in characters for k in range(n_rotations)])
