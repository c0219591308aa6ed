"""Fetching official data files: progress bar, checksum, atomic placement."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from metarun.errors import DataError

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, algorithm: str, checksum: str) -> Path:
    """Download ``url`` to ``dest`` and check its ``algorithm`` digest (md5, sha256) against
    ``checksum``. The file appears at ``dest`` only once complete and verified; a failed or
    corrupt download leaves nothing behind.

    Raises ``OSError`` (``urllib.error.URLError`` included) when the network fails (the caller turns that
    into a message naming the files to fetch by hand) and ``DataError`` on a checksum mismatch.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
        got = file_digest(partial, algorithm)
        if got != checksum:
            raise DataError(
                f"checksum mismatch for {dest.name} downloaded from {url}: expected {algorithm} "
                f"{checksum}, got {got}. The download is corrupt or the file upstream changed; "
                "nothing was kept.")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


