"""Reading Omniglot in the upstream layout (brendenlake/omniglot, ``python/``).

``images_background/<Alphabet>/characterNN/XXXX_YY.png`` (and ``images_evaluation/...``), either as
the two zips or extracted. The structure is checked (alphabets, characters, drawings per
character) instead of byte checksums, because users' copies are often re-packed.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from metarun.data.preprocess import Preprocessing
from metarun.errors import DataError

DRAWERS = 20


@dataclass(frozen=True)
class Subset:
    name: str
    alphabets: int
    characters: int
    md5: str  # of the upstream zip, checked only for files metarun downloads itself

    @property
    def images(self) -> int:
        return self.characters * DRAWERS


BACKGROUND = Subset("images_background", 30, 964, "68d2efa1b9178cc56df9314c21c6e718")
EVALUATION = Subset("images_evaluation", 20, 659, "6b91aef0f799c5bb55b94e3f2daec811")
SUBSETS = (BACKGROUND, EVALUATION)


def locate(root: Path, subset: Subset) -> Path | None:
    """The extracted folder ``root/<name>/`` if present, else ``root/<name>.zip``, else None."""
    folder, archive = root / subset.name, root / f"{subset.name}.zip"
    if folder.is_dir():
        return folder
    if archive.is_file():
        return archive
    return None


class _Reader:
    """Uniform access to PNG files in a folder or a zip, by their path below the subset root."""

    def __init__(self, location: Path, subset: Subset):
        self.location, self.subset = location, subset
        if location.is_dir():
            self.zip = None
            self.paths = sorted(str(p.relative_to(location.parent)).replace("\\", "/")
                                for p in location.glob("*/*/*.png"))
        else:
            try:
                self.zip = zipfile.ZipFile(location)
            except zipfile.BadZipFile as e:
                raise DataError(f"{location} is not a readable zip file ({e}); "
                                f"delete it and fetch {subset.name}.zip again") from e
            self.paths = sorted(n for n in self.zip.namelist()
                                if n.endswith(".png") and n.startswith(subset.name + "/"))

    def read(self, path: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(path)  # checks the member's CRC-32
            return (self.location.parent / path).read_bytes()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise DataError(self.damaged(path, e)) from e

    def image(self, path: str, image_size: int | None = None) -> np.ndarray:
        """The drawing at ``path`` decoded (at ``image_size``, or as stored when None)."""
        try:
            return decode_png(self.read(path), image_size)
        except UnreadableImage as e:
            raise DataError(self.damaged(path, e.__cause__)) from e

    def damaged(self, path: str, error: BaseException) -> str:
        where = f"{self.location}: member {path}" if self.zip is not None else str(self.location.parent / path)
        return (f"{where} is corrupt ({error}). Replace {self.location.name} with a fresh copy of the upstream "
                f"{self.subset.name}.zip (md5 {self.subset.md5}); `metarun-data check omniglot "
                "data.source=local` decodes every member")


def _check_structure(reader: _Reader) -> dict[tuple[str, str], list[str]]:
    """Group the PNG paths by (alphabet, character) and check the counts against upstream."""
    subset = reader.subset
    characters: dict[tuple[str, str], list[str]] = {}
    for path in reader.paths:
        parts = path.split("/")
        if len(parts) == 4:
            characters.setdefault((parts[1], parts[2]), []).append(path)
    alphabets = {a for a, _ in characters}
    short = sorted(f"{a}/{c}" for (a, c), files in characters.items() if len(files) != DRAWERS)
    found = (len(alphabets), len(characters), sum(len(v) for v in characters.values()))
    expected = (subset.alphabets, subset.characters, subset.images)
    if found != expected or short:
        detail = f"; characters without {DRAWERS} drawings: {', '.join(short[:5])}" if short else ""
        raise DataError(
            f"{reader.location} does not hold the complete Omniglot {subset.name}: expected "
            f"{expected[0]} alphabets / {expected[1]} characters / {expected[2]} images, found "
            f"{found[0]} / {found[1]} / {found[2]}{detail}. Replace it with the upstream "
            f"{subset.name}.zip (https://github.com/brendenlake/omniglot, python/).")
    return dict(sorted(characters.items()))


def verify_subset(location: Path, subset: Subset) -> tuple[int, int, int]:
    """(alphabets, characters, images) of a complete subset whose every image reads (CRC-32
    checked in a zip) and decodes; DataError naming the counts or the first damaged file."""
    reader = _Reader(location, subset)
    characters = _check_structure(reader)
    for paths in characters.values():
        for path in paths:
            reader.image(path)
    return len({a for a, _ in characters}), len(characters), sum(len(v) for v in characters.values())


class UnreadableImage(ValueError):
    """Bytes that do not decode as an image; the cause is PIL's error."""


def decode_png(data: bytes, image_size: int | None) -> np.ndarray:
    """A 105x105 drawing as ink intensity (strokes 255, background 0) at ``image_size`` (None:
    as stored). ``UnreadableImage`` when the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            gray = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(str(e)) from e
    if image_size is None:
        return 255 - np.asarray(gray, dtype=np.uint8)
    # the preprocessing that checkpoints store for prediction (metarun predict) is this one
    return Preprocessing(image_size, 1, invert=True).pixels(gray)[0]


def read_omniglot(root: Path, image_size: int, progress=None) -> dict[str, np.ndarray]:
    """Decode both subsets into arrays, in canonical order: background before evaluation,
    alphabets and characters sorted by name, drawings by drawer number.

    Returns images [N, S, S] uint8 and, per image, ``character`` (canonical index 0..1622) and
    ``drawer`` (0..19); per character, ``character_names`` ("Alphabet/characterNN") and
    ``background`` (True for the 964 background characters).
    """
    images, character, drawer, names, background = [], [], [], [], []
    for subset in SUBSETS:
        location = locate(root, subset)
        if location is None:
            raise FileNotFoundError(subset.name)
        reader = _Reader(location, subset)
        for (alphabet, char), paths in _check_structure(reader).items():
            index = len(names)
            names.append(f"{alphabet}/{char}")
            background.append(subset is BACKGROUND)
            for path in paths:  # XXXX_YY.png, YY the drawer 01..20
                images.append(reader.image(path, image_size))
                character.append(index)
                drawer.append(int(path[-6:-4]) - 1)
                if progress is not None:
                    progress.update(1)
    return {
        "images": np.stack(images),
        "character": np.asarray(character, dtype=np.int16),
        "drawer": np.asarray(drawer, dtype=np.int8),
        "character_names": np.asarray(names),
        "background": np.asarray(background),
    }
