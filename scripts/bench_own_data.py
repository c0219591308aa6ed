"""How long data=folder takes to decode 20,000 images into its cache, and how fast predict is.

    python scripts/bench_own_data.py --omniglot ../shared/data/omniglot --checkpoint outputs/recipes/protonet_omniglot_15min_seed0

1. Omniglot as a user's folder: the 19,280 drawings of images_background.zip plus the first 720 of
   images_evaluation.zip (20,000 PNGs of 105x105, 1,000 classes), decoded at 28px (first run: no
   cache) and loaded again (the cache).
2. 20,000 photographs' worth of JPEGs (320x240, generated with Pillow: smooth colour gradients and
   shapes, 100 classes), decoded at 84px.
3. metarun predict with the checkpoint (a ProtoNet trained on Omniglot): 20 evaluation characters
   never seen in training, 1 support drawing each, 19 queries each (380), through the CLI.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from metarun.data.image_folder import load_folder, scan_folder


def extract(archive: Path, dest: Path, limit: int | None = None, skip_classes: int = 0) -> int:
    written = 0
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        classes = sorted({n.rsplit("/", 1)[0] for n in names})[skip_classes:]
        keep = set(classes)
        for name in names:
            if name.rsplit("/", 1)[0] not in keep:
                continue
            if limit is not None and written >= limit:
                break
            target = dest / "/".join(name.split("/")[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
            written += 1
    return written


def make_photos(dest: Path, n: int, classes: int = 100) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        base = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None] * rng.random(3) + c
        pixels = np.clip(base + rng.normal(0, 20, (240, 320, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        ImageDraw.Draw(image).ellipse([40 + c, 30, 200 + c, 200], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        (dest / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
        image.save(dest / f"class{c:03d}" / f"{i:05d}.jpg", quality=90)


def time_cache(root: Path, cache: Path, image_size: int) -> tuple[float, float, int]:
    data = OmegaConf.create({"image_size": image_size, "channels": "auto", "invert": False})
    started = time.perf_counter()
    scan = scan_folder(root)
    arrays = load_folder(data, scan, cache)
    first = time.perf_counter() - started
    started = time.perf_counter()
    load_folder(data, scan_folder(root), cache)
    return first, time.perf_counter() - started, len(arrays["images"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--omniglot", type=Path, required=True, help="the folder with images_*.zip")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint or run dir trained on Omniglot")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_own_data_"))
    try:
        omniglot = work / "omniglot_folder"
        n = extract(args.omniglot / "images_background.zip", omniglot)
        n += extract(args.omniglot / "images_evaluation.zip", omniglot, limit=20_000 - n)
        first, again, count = time_cache(omniglot, work / "cache", 28)
        print(f"Omniglot PNGs 105x105 -> 28px: {count} images decoded and cached in {first:.1f} s "
              f"({count / first:.0f} images/s); loaded from the cache in {again:.2f} s")
        photos = work / "photos"
        make_photos(photos, 20_000)
        first, again, count = time_cache(photos, work / "cache", 84)
        print(f"JPEG 320x240 -> 84px: {count} images decoded and cached in {first:.1f} s "
              f"({count / first:.0f} images/s); loaded from the cache in {again:.2f} s")
        held_out = work / "held_out"
        extract(args.omniglot / "images_evaluation.zip", held_out, limit=400, skip_classes=100)
        for character in sorted(held_out.glob("*/*")):
            files = sorted(character.iterdir())
            name = f"{character.parent.name}_{character.name}"
            for i, f in enumerate(files):
                target = work / ("support" if i == 0 else "query") / name / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(f), target)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "metarun.cli", "predict", args.checkpoint, "--support",
                               str(work / "support"), "--query", str(work / "query"), "--out",
                               str(work / "predictions.csv")], capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip())
        print(f"metarun predict, the whole command (start-up included): {time.perf_counter() - started:.1f} s")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
