"""Omniglot from files: structure checks, checksums, the offline message, the package copy."""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA_DIR, needs_omniglot_files
from metarun.data.download import fetch
from metarun.data.omniglot import (EMBEDDED, EMBEDDED_SHA256, EMBEDDED_SIZE, ensure_files,
                                   load_cached, load_embedded)
from metarun.errors import DataError

UPSTREAM = "https://github.com/brendenlake/omniglot/raw/master/python"


def test_download_keeps_only_verified_files(tmp_path):
    payload = tmp_path / "served.zip"
    payload.write_bytes(b"not really a zip, but bytes with a known md5")
    good_md5 = hashlib.md5(payload.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "images_background.zip"
    with pytest.raises(DataError, match="checksum mismatch for images_background.zip"):
        fetch(payload.as_uri(), dest, "md5", "0" * 32)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-kept
    fetch(payload.as_uri(), dest, "md5", good_md5)
    assert dest.read_bytes() == payload.read_bytes()


def test_offline_message_names_the_files_and_the_folder(tmp_path):
    root = tmp_path / "omniglot"
    with pytest.raises(DataError) as error:
        ensure_files(root, allow_download=True, download_url="http://127.0.0.1:9/omniglot")
    message = str(error.value)
    assert "download failed" in message
    for name in ("images_background.zip", "images_evaluation.zip", str(root),
                 "68d2efa1b9178cc56df9314c21c6e718", "6b91aef0f799c5bb55b94e3f2daec811"):
        assert name in message
    with pytest.raises(DataError, match="data.source=local never downloads"):
        ensure_files(root, allow_download=False, download_url=UPSTREAM)


def test_incomplete_folder_is_reported_not_used(tmp_path, cache_dir):
    root = tmp_path / "omniglot"
    root.mkdir()
    for name, alphabets in (("images_background", 2), ("images_evaluation", 1)):
        with zipfile.ZipFile(root / f"{name}.zip", "w") as z:
            for a in range(alphabets):
                for d in range(20):
                    z.writestr(f"{name}/Alpha{a}/character01/{a:04d}_{d + 1:02d}.png", b"")
    with pytest.raises(DataError, match=r"expected 30 alphabets / 964 characters / 19280 images, found 2 / 2 / 40"):
        load_cached(root, cache_dir, 28, allow_download=False, download_url=UPSTREAM)


def test_package_copy_is_checked(tmp_path):
    corrupt = tmp_path / "omniglot28.npz"
    data = bytearray(EMBEDDED.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt"):
        load_embedded(corrupt)
    with pytest.raises(DataError, match="missing"):
        load_embedded(tmp_path / "absent.npz")


@needs_omniglot_files
def test_real_files_decode_to_the_package_copy_and_rebuild_its_checksum(tmp_path, cache_dir):
    """The shipped 28x28 array is exactly the upstream images as metarun decodes them, and the
    committed build script reproduces the recorded checksum."""
    root = Path(DATA_DIR) / "omniglot"
    decoded = load_cached(root, cache_dir, EMBEDDED_SIZE, allow_download=False, download_url=UPSTREAM)
    shipped = load_embedded()
    for key, value in shipped.items():
        assert np.array_equal(decoded[key], value), key
    assert decoded["images"].shape == (32460, 28, 28)
    import build_embedded_omniglot as build
    arrays = dict(decoded, license=np.asarray(build.LICENSE), citation=np.asarray(build.CITATION))
    build.write_npz(tmp_path / "rebuilt.npz", arrays)
    assert hashlib.sha256((tmp_path / "rebuilt.npz").read_bytes()).hexdigest() == EMBEDDED_SHA256


@needs_omniglot_files
def test_extracted_folders_are_accepted_and_cached(tmp_path, cache_dir):
    root = tmp_path / "omniglot"
    for name in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(Path(DATA_DIR) / "omniglot" / f"{name}.zip") as z:
            z.extractall(root)
    first = load_cached(root, cache_dir, 14, allow_download=False, download_url=UPSTREAM)
    assert first["images"].shape == (32460, 14, 14)
    assert len(list(cache_dir.glob("omniglot_14px_*.npz"))) == 1
    shutil.rmtree(root / "images_evaluation" / "Angelic")  # a damaged copy is caught
    with pytest.raises(DataError, match="659 characters"):
        load_cached(root, tmp_path / "fresh_cache", 14, allow_download=False, download_url=UPSTREAM)
