"""``metarun predict CHECKPOINT --support DIR --query DIR``: classify new images with a trained learner.

The support folder holds a few images of each class (``DIR/<class>/<image>``); the query folder
holds images to classify, either directly (unlabelled) or in class folders (labelled: the accuracy
is printed). Writes a CSV: file, the predicted class, the probability of each class, and the true
class when the queries are labelled. It runs through ``metarun.api`` (``load``, ``adapt``,
``predict``), so the CLI and the Python API give identical numbers.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from metarun.api import TrainedLearner, load
from metarun.data.image_folder import is_image, scan_folder
from metarun.errors import DataError, MetarunError


def support_set(folder: Path) -> tuple[list[Path], list[str]]:
    scan = scan_folder(folder)
    return ([f for files in scan.classes.values() for f in files],
            [name for name, files in scan.classes.items() for _ in files])


def query_set(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The query files, with their classes when ``folder`` holds class folders (None: unlabelled)."""
    if not folder.is_dir():
        raise DataError(f"{folder} (--query) is not a folder")
    direct = sorted(f for f in folder.iterdir() if f.is_file() and is_image(f))
    if direct:
        if any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir()):
            raise DataError(f"{folder} (--query) holds images and folders: give either images to classify "
                            "or class folders of labelled images")
        return direct, None
    return support_set(folder)


def write_predictions(out: Path, learner: TrainedLearner, files: list[Path], root: Path, probabilities,
                      labels: list[str] | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted"] + [f"p({c})" for c in learner.classes]
                        + (["label"] if labels is not None else []))
        for i, (path, row) in enumerate(zip(files, probabilities.tolist())):
            predicted = learner.classes[max(range(len(row)), key=row.__getitem__)]
            writer.writerow([path.relative_to(root).as_posix(), predicted] + [f"{p:.6f}" for p in row]
                            + ([labels[i]] if labels is not None else []))


def predict(checkpoint: str, support: Path, query: Path, out: Path, device: str, trust: bool) -> dict:
    learner = load(checkpoint, device, trust)
    support_files, support_labels = support_set(support)
    query_files, query_labels = query_set(query)
    if query_labels is not None:
        unknown = sorted(set(query_labels) - set(support_labels))
        if unknown:
            raise DataError(f"query class {unknown[0]} ({query / unknown[0]}) has no support images in {support}: "
                            "every labelled query class needs a folder in --support")
    started = time.perf_counter()
    learner.adapt(support_files, support_labels)
    probabilities = learner.predict(query_files)
    seconds = time.perf_counter() - started
    write_predictions(out, learner, query_files, query, probabilities, query_labels)
    summary = {"checkpoint": str(learner.checkpoint), "algo": learner.algo, "classes": len(learner.classes),
               "support": len(support_files), "queries": len(query_files), "seconds": seconds, "csv": str(out)}
    if query_labels is not None:
        predicted = probabilities.argmax(1).tolist()
        summary["accuracy"] = sum(learner.classes[p] == y for p, y in zip(predicted, query_labels)) / len(predicted)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="metarun predict", description="Classify images of new classes with a trained learner, "
        "adapted to a few labelled images of each class.")
    parser.add_argument("checkpoint", help="a checkpoint (.pt) or a run dir (its tested checkpoint)")
    parser.add_argument("--support", type=Path, required=True, help="DIR/<class>/<image>: a few images a class")
    parser.add_argument("--query", type=Path, required=True,
                        help="images to classify: DIR/<image>, or DIR/<class>/<image> to score them")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="read a checkpoint of an older metarun with pickle (only from a source you trust)")
    args = parser.parse_args(argv)
    try:
        summary = predict(args.checkpoint, args.support, args.query, args.out, args.device, args.trust_checkpoint)
    except MetarunError as e:
        print(f"metarun predict: error: {e}", file=sys.stderr)
        sys.exit(2)
    line = (f"{summary['queries']} queries, {summary['classes']} classes ({summary['support']} support images), "
            f"{summary['algo']} from {summary['checkpoint']}: {summary['seconds']:.2f} s; wrote {summary['csv']}")
    if "accuracy" in summary:
        line += f"; accuracy {100 * summary['accuracy']:.2f}%"
    print(line)


if __name__ == "__main__":
    main()
