"""Build metarun/data/assets/omniglot28.npz, the 28x28 Omniglot that ships inside the package.

    python scripts/build_embedded_omniglot.py /path/to/folder/with/omniglot/zips

The folder holds images_background and images_evaluation in the upstream layout (zips or
extracted). The images are decoded exactly as ``data.source=local`` decodes them, and written
as an npz whose bytes depend only on the images (fixed entry order and timestamps), so the
sha256 printed at the end is reproducible; record it in metarun/data/omniglot.py.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metarun.data.omniglot import EMBEDDED, EMBEDDED_SIZE, TOTAL_IMAGES
from metarun.data.omniglot_archive import read_omniglot

LICENSE = """Omniglot data set: Copyright (c) 2015 Brenden Lake. MIT License
(https://github.com/brendenlake/omniglot/blob/master/LICENSE). Permission is hereby granted, free
of charge, to any person obtaining a copy of this data and associated documentation, to deal in it
without restriction, subject to the conditions of the MIT License, including that the copyright
notice and this permission notice be included in all copies or substantial portions."""
CITATION = ("Lake, B. M., Salakhutdinov, R., & Tenenbaum, J. B. (2015). Human-level concept "
            "learning through probabilistic program induction. Science, 350(6266), 1332-1338.")
FIXED_TIME = (2015, 12, 11, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding the upstream Omniglot files")
    parser.add_argument("--out", type=Path, default=EMBEDDED)
    args = parser.parse_args()
    with tqdm(total=TOTAL_IMAGES, desc="decoding", unit="img") as bar:
        arrays = read_omniglot(args.root, EMBEDDED_SIZE, progress=bar)
    arrays["license"] = np.asarray(LICENSE)
    arrays["citation"] = np.asarray(CITATION)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {len(arrays['images'])} images, sha256 {digest}")


if __name__ == "__main__":
    main()
