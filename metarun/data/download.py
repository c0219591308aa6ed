"""Fetching official data files: progress bar, checksum, atomic placement."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
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




@dataclass(frozen=True)
class OfficialArchive:
    """A data set published as one archive, read as it is or as the folder it extracts to."""
    title: str  # as users know it: "CIFAR-100"
    name: str  # the archive's file name
    md5: str
    folder: str  # the folder the archive extracts to
    marker: str  # a path inside ``folder`` that an extracted copy has
    default_root: str  # where data.root points by default, for the message


def locate_archive(root: Path, archive: OfficialArchive, allow_download: bool, url: str) -> Path:
    """The extracted folder or the archive in ``root``; else the archive downloaded there (md5
    checked) when allowed; else a ``DataError`` naming the file, its address and checksum, and
    the folder to put it in."""
    folder, path = root / archive.folder, root / archive.name
    if (folder / archive.marker).exists():
        return folder
    if path.is_file():
        return path

    def missing(reason: str) -> DataError:
        return DataError(f"{archive.title} {reason}. Put {archive.name} (md5 {archive.md5}, from {url}), "
                         f"or the folder {archive.folder}/ extracted from it, into {root} (data.root; "
                         f"{archive.default_root} by default).")

    if not allow_download:
        raise missing("not found, and data.source=local never downloads")
    try:
        return fetch(url, path, "md5", archive.md5)
    except OSError as e:  # the network is down or the address is gone
        raise missing(f"download failed: {e}") from e
