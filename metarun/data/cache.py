"""Decoded data sets cached as .npz files, written atomically, and used only while they hold what
was written: the sha256 of each cache file is recorded beside it (``<cache>.sha256``) when it is
built and checked at every load, so a cache that was damaged or replaced, even by a readable
file of the right shape, is rebuilt from the real files instead of being trained on."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from metarun.data.download import file_digest

log = logging.getLogger("metarun")


def fingerprint(*parts: str) -> str:
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Where a file is and its size and modification time: a changed source gets a new cache."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def digest_file(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256")


def read_verified(cache: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays of ``cache`` if its content is what was recorded when it was built, else None
    (with a warning saying why)."""
    recorded = digest_file(cache)
    if not recorded.is_file():
        log.warning(f"cache {cache} has no recorded sha256 ({recorded.name}); decoding the files again")
        return None
    if file_digest(cache, "sha256") != recorded.read_text().strip():
        log.warning(f"cache {cache} differs from what was written when it was built (sha256 in "
                    f"{recorded.name}); decoding the files again")
        return None
    try:
        with np.load(cache) as stored:
            return {k: stored[k] for k in keys}
    except Exception as e:  # recorded but unreadable: written by a different numpy, or a bug
        log.warning(f"cache {cache} is unreadable ({e}); decoding the files again")
        return None


def cached_arrays(cache: Path, keys: tuple[str, ...], build: Callable[[], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """The arrays stored in ``cache`` (when verified), else ``build()``'s, stored there for next time."""
    if cache.is_file():
        arrays = read_verified(cache, keys)
        if arrays is not None:
            return arrays
    arrays = build()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.part.npz")
        np.savez(partial, **arrays)
        partial_digest = digest_file(partial)
        partial_digest.write_text(file_digest(partial, "sha256") + "\n")
        os.replace(partial_digest, digest_file(cache))  # the digest first: a crash in between
        os.replace(partial, cache)                       # leaves a mismatch, so a rebuild
    except OSError as e:
        log.warning(f"could not write the cache {cache} ({e}); continuing without it")
    return arrays
