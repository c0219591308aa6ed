"""Decoded data sets cached as .npz files, written atomically and rebuilt when unreadable."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("metarun")


def fingerprint(*parts: str) -> str:
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Where a file is and its size and modification time: a changed source gets a new cache."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def cached_arrays(cache: Path, keys: tuple[str, ...], build: Callable[[], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """The arrays stored in ``cache``, else ``build()``'s, stored there for next time."""
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                return {k: stored[k] for k in keys}
        except Exception as e:  # a torn or corrupt cache is rebuilt from the real files
            log.warning(f"cache {cache} is unreadable ({e}); decoding the files again")
    arrays = build()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".part.npz")
        np.savez(partial, **arrays)
        os.replace(partial, cache)
    except OSError as e:
        log.warning(f"could not write the cache {cache} ({e}); continuing without it")
    return arrays
