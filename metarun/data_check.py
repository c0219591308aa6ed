"""``metarun-data check NAME [overrides]``: is a data set on disk complete and what holds what.

Composes the same config as ``metarun`` (so ``paths.data_dir``, ``data.root`` and the split keys
mean the same), checks the files -- presence, checksums where upstream publishes them,
structure, counts per split -- and prints a table. Exit status 1 when something is wrong.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from metarun.data import DATASETS, build_sources
from metarun.config_check import check_folder as check_folder_config
from metarun.data import cifar100, cub, image_folder
from metarun.data.download import OfficialArchive, file_digest
from metarun.data.lake_runs import ARCHIVE as RUNS_ARCHIVE
from metarun.data.lake_runs import SHA256 as RUNS_SHA256
from metarun.data.lake_runs import read_runs
from metarun.data.omniglot_archive import SUBSETS, locate, verify_subset
from metarun.errors import MetarunError


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def check_omniglot_files(root: Path) -> tuple[str, bool]:
    rows, ok = [], True
    for subset in SUBSETS:
        location = locate(root, subset)
        if location is None:
            rows.append([f"{subset.name}.zip", "MISSING", "", "", "", "", ""])
            ok = False
            continue
        digest = file_digest(location, "md5") if location.is_file() else "(folder)"
        upstream = "yes" if digest == subset.md5 else "no: re-packed or extracted; structure checked"
        try:
            counts = verify_subset(location, subset)
        except MetarunError as e:
            rows.append([location.name, "BROKEN", digest, upstream, str(e), "", ""])
            ok = False
            continue
        rows.append([location.name, "ok", digest, upstream, *counts])
    runs = root / RUNS_ARCHIVE
    if runs.is_file():
        digest = file_digest(runs, "sha256")
        try:
            found = f"{len(read_runs(runs))} runs"
            rows.append([RUNS_ARCHIVE, "ok", digest[:16] + "…", "yes" if digest == RUNS_SHA256 else "no", found, "", ""])
        except MetarunError as e:
            rows.append([RUNS_ARCHIVE, "BROKEN", digest[:16] + "…", "", str(e), "", ""])
            ok = False
    else:
        rows.append([RUNS_ARCHIVE, "missing (only eval=lake_runs needs it)", "", "", "", "", ""])
    header = ["file", "status", "md5 / sha256", "upstream bytes", "alphabets", "characters", "images"]
    return f"Omniglot files in {root}\n\n" + table(header, rows), ok


# data sets read from one official archive (or the folder extracted from it)
ARCHIVE_SOURCES = {"cifarfs": cifar100.OFFICIAL, "fc100": cifar100.OFFICIAL, "cub": cub.OFFICIAL}


def check_archive_files(root: Path, official: OfficialArchive) -> str:
    """The archive's checksum (its structure and counts are checked by building the splits).
    Says which copy a run would read, by the same rule as ``locate_archive``."""
    archive, folder = root / official.name, root / official.folder
    if (folder / official.marker).exists():
        row = [f"{official.folder}/", "present (extracted)", "", ""]
    elif archive.is_file():
        digest = file_digest(archive, "md5")
        row = [official.name, "present", digest,
               "yes" if digest == official.md5 else "no: re-packed or damaged; structure checked below"]
    else:
        row = [official.name, "missing (data.source=auto downloads it)", "", ""]
    return f"Files in {root}\n\n" + table(["file", "status", "md5", "upstream bytes"], [row])


def split_table(cfg) -> str:
    """Classes and images per split, as a run with this config sees them."""
    sources = build_sources(cfg.data, cfg.paths)
    rows = [[split, source.n_classes, int(source.counts.sum()), tuple(source.image_shape)]
            for split, source in sources.items() if source is not None]
    setting = ", ".join(f"{k}={cfg.data[k]}" for k in ("split", "val_characters", "rotations", "source")
                        if k in cfg.data)
    return (f"Splits of {cfg.data.name} ({setting})\n\n"
            + table(["split", "classes", "images", "image shape"], rows))


def check_folder(cfg) -> tuple[str, bool]:
    """data=folder: classes and images per split, classes too small for the episodes, unreadable
    images (each by name), images identical in two splits, and files that are not images."""
    data = cfg.data
    scan = image_folder.scan_folder(Path(data.root).expanduser())
    split = image_folder.split_classes(data, scan)
    arrays, failures = image_folder.decode_folder(scan, data)
    lines, ok = [f"Image folder {scan.root}: {len(scan.classes)} classes, {scan.n_images} images, "
                 f"split by {'class lists' if (scan.root / 'train.txt').is_file() and data.split != 'fractions' else 'fractions'}"], True
    needs = {"train": cfg.algo.episode.shots + cfg.algo.episode.queries, "val": data.shots + data.queries,
             "test": data.shots + data.queries}
    rows = []
    for name in image_folder.SPLITS:
        counts = [len(scan.classes[c]) for c in split[name]]
        small = [c for c in split[name] if len(scan.classes[c]) < needs[name]]
        ok &= not small or not counts
        rows.append([name, len(counts), sum(counts), min(counts, default=""), max(counts, default=""),
                     needs[name], ", ".join(small[:5]) + (f" (+{len(small) - 5})" if len(small) > 5 else "")
                     or "none"])
    lines.append("\n" + table(["split", "classes", "images", "fewest a class", "most a class",
                                "episode needs", "classes too small"], rows))
    if failures:
        ok = False
        lines.append(f"\n{len(failures)} unreadable image(s):\n" + "\n".join(f"  {f}" for f in failures))
    else:
        owner = {c: name for name in image_folder.SPLITS for c in split[name]}
        first_seen: dict[bytes, tuple[str, str]] = {}
        shared = []
        for pixels, label, file in zip(arrays["images"], arrays["labels"], arrays["files"]):
            where = owner.get(str(arrays["class_names"][label]))
            if where is None:
                continue
            key = hashlib.sha1(pixels.tobytes()).digest()
            seen = first_seen.setdefault(key, (where, str(file)))
            if seen[0] != where:
                shared.append(f"  {seen[1]} ({seen[0]}) = {file} ({where})")
        if shared:
            ok = False
            lines.append(f"\n{len(shared)} image(s) identical (at {data.image_size}px) in two splits, which "
                         "lets a test class leak into meta-training:\n" + "\n".join(shared))
        else:
            lines.append("\nno image is identical in two splits")
    if scan.other_files:
        lines.append(f"\n{len(scan.other_files)} file(s) are not images and are not read, e.g. "
                     f"{scan.other_files[0]}")
    return "\n".join(lines), ok


def check(name: str, overrides: list[str]) -> int:
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data={name}", *overrides])
    ok = True
    if name == "omniglot":
        report, ok = check_omniglot_files(Path(cfg.paths.data_dir).expanduser() / "omniglot")
        print(report + "\n")
    if name in ARCHIVE_SOURCES:
        print(check_archive_files(Path(cfg.data.root).expanduser(), ARCHIVE_SOURCES[name]) + "\n")
    if name == "folder":
        try:
            check_folder_config(cfg)
            report, ok = check_folder(cfg)
        except MetarunError as e:
            print(f"metarun-data: {e}", file=sys.stderr)
            return 1
        print(report)
        return 0 if ok else 1
    try:
        print(split_table(cfg))
    except MetarunError as e:
        print(f"metarun-data: {e}", file=sys.stderr)
        ok = False
    return 0 if ok else 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarun-data", description="Check a data set on disk.")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="files, checksums, structure and split counts")
    checking.add_argument("name", choices=[d for d in DATASETS if d != "sinusoid"])
    checking.add_argument("overrides", nargs="*", help="config overrides, as for metarun "
                          "(paths.data_dir=..., data.source=local, data.split=lake, data.root=...)")
    args = parser.parse_args(argv)
    sys.exit(check(args.name, args.overrides))


if __name__ == "__main__":
    main()
