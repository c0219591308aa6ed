"""``metarun-data check NAME [overrides]``: is a data set on disk complete and what holds what.

Composes the same config as ``metarun`` (so ``paths.data_dir``, ``data.root`` and the split keys
mean the same), checks the files -- presence, checksums where upstream publishes them,
structure, counts per split -- and prints a table. Exit status 1 when something is wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from metarun.data import DATASETS, build_sources
from metarun.data import cifar100, cub
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


def check(name: str, overrides: list[str]) -> int:
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data={name}", *overrides])
    ok = True
    if name == "omniglot":
        report, ok = check_omniglot_files(Path(cfg.paths.data_dir).expanduser() / "omniglot")
        print(report + "\n")
    if name in ARCHIVE_SOURCES:
        print(check_archive_files(Path(cfg.data.root).expanduser(), ARCHIVE_SOURCES[name]) + "\n")
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
