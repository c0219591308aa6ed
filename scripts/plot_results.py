"""The docs' pictures, drawn from recorded runs: metarun against the papers (from results/), and the
meta-training curves of the recorded recipe runs (from their run dirs' metrics.jsonl).

    python scripts/plot_results.py            # writes docs/img/results.png and docs/img/curves.png

Only runs of each recipe as its file stands now are drawn, as in the README's table (a run of an
older version, or one that an override changed, would be averaged in otherwise). Entries whose run
dir is not on this machine are left out of the curves (and said so)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metarun.paper_results import PAPER_RESULTS  # noqa: E402
from metarun.registry import REGISTRY, current_version_entries, load_entries, recipe_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"


def accuracy_rows(entries: list[dict]) -> list[tuple[str, float, float, float | None]]:
    """(label, mean over seeds, mean CI half-width, paper) per recipe and setting, in percent."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in entries:
        r = e["results"]
        if r["metric"] == "accuracy" and r.get("protocol") != "lake_runs":
            groups[(recipe_name(e), f"{r['data']} {r['ways']}-way {r['shots']}-shot")].append(r)
    rows = []
    for (recipe, setting), results in sorted(groups.items()):
        r = results[0]
        paper = PAPER_RESULTS.get((r["algo"], r["data"], r["ways"], r["shots"]))
        rows.append((f"{recipe}\n{setting} ({len(results)} seed{'s' if len(results) > 1 else ''})",
                     100 * np.mean([x["mean"] for x in results]), 100 * np.mean([x["ci95"] for x in results]),
                     None if paper is None else paper.accuracy))
    return rows


def plot_accuracies(rows, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.barh(y, [r[1] for r in rows], xerr=[r[2] for r in rows], color="#3f51b5", label="metarun (mean of seeds)")
    papers = [(i, r[3]) for i, r in enumerate(rows) if r[3] is not None]
    ax.scatter([p for _, p in papers], [i for i, _ in papers], marker="|", s=400, color="#e53935", zorder=3,
               label="paper")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    low = min(min(r[1] for r in rows), min((p for _, p in papers), default=100)) - 3
    ax.set_xlim(low, 100)
    ax.set_xlabel("test accuracy (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("The recipes' recorded runs (results/) against the papers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(entries: list[dict], path: Path) -> list[str]:
    """Meta-training loss against training time, one line per recorded training run."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    missing = []
    for e in sorted(entries, key=lambda e: (e["recipe"], e["results"]["seed"])):
        if e["mode"] != "train":
            continue
        metrics = ROOT / e["run_dir"] / "metrics.jsonl"
        if not metrics.is_file():
            missing.append(e["run_dir"])
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        rows = [r for r in rows if "train/loss" in r]
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["train/loss"] for r in rows])
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        seconds = steps[window - 1:] / steps[-1] * e["train_time_s"]
        ax.plot(seconds, smooth, label=f"{e['recipe']} seed {e['results']['seed']}", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("meta-training loss (moving average)")
    ax.set_title("Meta-training curves of the recorded recipe runs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return missing


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # as the README's table: each recipe as its file stands now (no older version averaged in)
    entries = current_version_entries(load_entries(REGISTRY))
    plot_accuracies(accuracy_rows(entries), OUT / "results.png")
    missing = plot_curves(entries, OUT / "curves.png")
    print(f"wrote {OUT / 'results.png'} and {OUT / 'curves.png'}"
          + (f"; no run dir here for {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
