"""The Omniglot one-shot classification challenge (Lake, Salakhutdinov & Tenenbaum 2015, Science).

Twenty runs, each 20-way within one evaluation alphabet: 20 training images (one drawing of each
of 20 characters) and 20 test images (another drawer's drawing of each). Every test image is
classified against the 20 training images of its run; the score is the error rate averaged over
the 20 runs. Upstream keeps them in ``python/one-shot-classification/all_runs.zip``
(``runNN/training/classNN.png``, ``runNN/test/itemNN.png`` and ``runNN/class_labels.txt``,
lines ``runNN/test/itemXX.png runNN/training/classYY.png``).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from metarun.data.download import fetch, file_digest
from metarun.data.omniglot_archive import UnreadableImage, decode_png
from metarun.errors import DataError
from metarun.tasks import Task

ARCHIVE = "all_runs.zip"
SHA256 = "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"  # upstream's file
RUNS, WAYS = 20, 20
# error rates (%) on these runs reported by Lake et al. 2015 (Fig. 2 and Sec. "One-shot classification")
REFERENCE_ERRORS = {"people": 4.5, "Bayesian Program Learning": 3.3, "Siamese ConvNet": 8.0,
                    "deep ConvNet": 13.5, "Hierarchical Deep": 34.8}


@dataclass
class LakeRun:
    name: str
    training: list[bytes]  # PNG of class01..class20
    test: list[bytes]      # PNG of item01..item20
    labels: list[int]      # index (0..19) of the training image each test item belongs to


def locate_runs(root: Path, allow_download: bool, download_url: str) -> Path:
    """``root/all_runs.zip``, fetched (sha256-checked) when missing and ``allow_download``."""
    archive = root / ARCHIVE
    url = f"{download_url}/one-shot-classification/{ARCHIVE}"
    if archive.is_file():
        return archive
    if allow_download:
        try:
            return fetch(url, archive, "sha256", SHA256)
        except OSError as e:
            reason = f"download failed: {e}"
    else:
        reason = "not found, and data.source=local never downloads"
    raise DataError(f"the one-shot runs of Lake et al. 2015 are missing ({archive}: {reason}). Put "
                    f"{ARCHIVE} from {url} (sha256 {SHA256}) in {root}/, then run again.")


def read_runs(archive: Path) -> list[LakeRun]:
    try:
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            runs = []
            for r in range(1, RUNS + 1):
                run = f"run{r:02d}"
                wanted = [f"{run}/class_labels.txt"] + [f"{run}/{kind}/{stem}{i:02d}.png"
                          for kind, stem in (("training", "class"), ("test", "item"))
                          for i in range(1, WAYS + 1)]
                missing = [n for n in wanted if n not in names]
                if missing:
                    raise DataError(f"{archive} is not the Lake et al. runs archive: {missing[0]} is "
                                    f"missing (expected run01..run{RUNS} with {WAYS} training and test "
                                    f"images each); fetch {ARCHIVE} again (sha256 {SHA256})")
                labels = {}
                for line in z.read(f"{run}/class_labels.txt").decode().split("\n"):
                    if line.strip():
                        test, train = line.split()
                        labels[int(test[-6:-4]) - 1] = int(train[-6:-4]) - 1
                runs.append(LakeRun(
                    run, [z.read(f"{run}/training/class{i:02d}.png") for i in range(1, WAYS + 1)],
                    [z.read(f"{run}/test/item{i:02d}.png") for i in range(1, WAYS + 1)],
                    [labels[i] for i in range(WAYS)]))
            return runs
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DataError(f"{archive} is unreadable or malformed ({e}); fetch {ARCHIVE} again "
                        f"(sha256 {SHA256}, found {file_digest(archive, 'sha256')})") from e


def run_task(run: LakeRun, image_size: int, normalise: Callable[[torch.Tensor], torch.Tensor]) -> Task:
    """The run as a 20-way 1-shot task: the training images are the support set (label i for
    class i+1), the test images the queries -- in the same preprocessing as meta-training
    (``normalise``: the meta-training source's)."""
    def images(pngs, kind: str):
        try:
            pixels = np.stack([decode_png(p, image_size) for p in pngs])
        except UnreadableImage as e:
            raise DataError(f"an image of {run.name}/{kind}/ in {ARCHIVE} does not decode ({e}); fetch "
                            f"{ARCHIVE} again (sha256 {SHA256})") from e
        return normalise(torch.from_numpy(pixels).float().div_(255).unsqueeze(1))

    return Task(images(run.training, "training"), torch.arange(WAYS), images(run.test, "test"),
                torch.tensor(run.labels))


def ink_points(png: bytes) -> torch.Tensor:
    """Coordinates of the ink pixels of a 105x105 drawing, centred on their mean."""
    with Image.open(io.BytesIO(png)) as image:
        ink = np.asarray(image.convert("L")) < 128
    points = torch.from_numpy(np.argwhere(ink).astype(np.float32))
    return points - points.mean(0)


def modified_hausdorff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dubuisson & Jain's (1994) modified Hausdorff distance between two point sets: the larger
    of the two mean distances from a point of one set to the nearest point of the other."""
    d = torch.cdist(a, b)
    return float(torch.maximum(d.min(1).values.mean(), d.min(0).values.mean()))


def modified_hausdorff_error(runs: list[LakeRun]) -> float:
    """Error rate (%) of nearest-neighbour classification by modified Hausdorff distance on the
    raw drawings: the upstream baseline of these runs, a check of the scorer."""
    errors = []
    for run in runs:
        train = [ink_points(p) for p in run.training]
        wrong = 0
        for png, label in zip(run.test, run.labels):
            test = ink_points(png)
            guess = int(np.argmin([modified_hausdorff(test, t) for t in train]))
            wrong += guess != label
        errors.append(100.0 * wrong / WAYS)
    return float(np.mean(errors))
