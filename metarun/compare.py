"""Comparison of finished runs: one row per (algorithm, setting), with a paired test against
the best row of the setting on the identical test episodes. Runs that differ in anything but
the seed and the data set (``algo.inner_lr=0.1,0.4``, an Optuna search) get a row each, labelled
with the overrides that tell them apart; seeds are averaged within a row.

Used at the end of every multirun (``metarun.sweep.CompareOnMultirunEnd``) and by the
``metarun-compare DIR...`` command for any set of run or sweep directories. Runs that failed or
have not finished are listed as such, never dropped silently.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from metarun.engine.stats import HIGHER_IS_BETTER, mean_ci95, primary

# the metric of a data kind, for runs that failed before results.json existed
METRICS = {"regression": "mse", "bandit": "return", "navigation": "return", "gym": "return"}
ERROR_FILE = "error.txt"  # written by the CLI when a run fails
# overrides that do not make a run a variant: the seed (averaged over), the data set and episode
# shape (the setting), and keys that change how a run is shown or resumed, not what it computes
NOT_VARIANT_KEYS = ("seed", "algo", "trainer.progress", "trainer.resume")
NOT_VARIANT_PREFIXES = ("data", "hydra")


@dataclass
class Run:
    path: Path
    config: dict
    status: str                       # finished | failed | unfinished
    results: dict | None = None
    scores: np.ndarray | None = None  # per test episode (meta-RL: the return after full adaptation)
    tasks_per_s: float = float("nan")
    detail: str = ""
    overrides: dict[str, str] = field(default_factory=dict)  # the run's command-line overrides

    @property
    def algo(self) -> str:
        return self.config["algo"]["name"]

    @property
    def setting(self) -> str:
        """The data set and episode shape, from results.json when there is one (its values are
        resolved), else from the run's config."""
        data = self.config["data"]
        facts = self.results or {"data": data["name"], "split": data.get("split"),
                                 "ways": data.get("ways"), "shots": data.get("shots"),
                                 "metric": METRICS.get(data.get("kind"), "accuracy")}
        if facts["metric"] == "return":
            return facts.get("task_family") or facts["data"]
        if facts["metric"] == "mse":
            return f"{facts['data']} {facts['shots']}-shot"
        split = f" ({facts['split']})" if facts.get("split") else ""
        return f"{facts['data']}{split} {facts['ways']}-way {facts['shots']}-shot"


@dataclass
class Row:
    algo: str
    setting: str
    metric: str
    runs: list[Run] = field(default_factory=list)
    mean: float = float("nan")
    ci95: float = float("nan")
    seed_std: float = float("nan")
    best: bool = False
    p_vs_best: float = float("nan")
    paired_n: int = 0


def find_run_dirs(paths) -> list[Path]:
    """Run directories (those holding .hydra/config.yaml) at or below each path, sorted."""
    found = set()
    for path in map(Path, paths):
        if (path / ".hydra" / "config.yaml").is_file():
            found.add(path)
        else:
            found.update(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
    return sorted(found)


def read_overrides(path: Path) -> dict[str, str]:
    """``key=value`` overrides of a run, minus the non-variant keys (``variant_overrides``)."""
    file = path / ".hydra" / "overrides.yaml"
    return variant_overrides((yaml.safe_load(file.read_text()) if file.is_file() else None) or [])


def variant_overrides(items, not_variant_keys=NOT_VARIANT_KEYS) -> dict[str, str]:
    """``key=value`` overrides (``+``/``++``/``~`` prefixes dropped) that make a run a variant:
    all but ``not_variant_keys`` and the data set's and Hydra's keys."""
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if key not in not_variant_keys and not key.startswith(NOT_VARIANT_PREFIXES):
            overrides[key] = value
    return overrides


def short_value(value: str) -> str:
    """Numbers to 4 significant digits (an Optuna trial's 0.2588170214937917 -> 0.2588)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 6 else f"{number:.4g}"


def variant_labels(runs: list[Run]) -> dict[Path, str]:
    """Each run's row label: its algorithm, plus the overrides whose values differ between runs."""
    keys = sorted({k for r in runs for k in r.overrides})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    labels = {}
    for run in runs:
        parts = [f"{k}={short_value(run.overrides[k])}" for k in varying if k in run.overrides]
        labels[run.path] = run.algo + (f" ({', '.join(parts)})" if parts else "")
    return labels


def read_run(path: Path) -> Run:
    config = yaml.safe_load((path / ".hydra" / "config.yaml").read_text())
    run = Run(path, config, "unfinished", overrides=read_overrides(path))
    results = path / "results.json"
    if results.is_file():
        run.status, run.results = "finished", json.loads(results.read_text())
        scores = path / "episode_scores.npy"
        run.scores = primary(np.load(scores)) if scores.is_file() else None
    elif (path / ERROR_FILE).is_file():
        run.status = "failed"
        run.detail = (path / ERROR_FILE).read_text().strip().splitlines()[-1]
    metrics = read_metrics(path)
    if run.status == "unfinished":
        step = max((r["step"] for r in metrics), default=0)
        run.detail = f"stopped at step {step}" if step else "no step logged"
    if run.results and run.results.get("wall_time_s"):
        run.tasks_per_s = run.results["step"] * config["algo"]["meta_batch"] / run.results["wall_time_s"]
    return run


def read_metrics(path: Path) -> list[dict]:
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def mean_rate(runs: list[Run]) -> float:
    """Mean meta-training tasks/s of the runs (steps x algo.meta_batch / training time, the same
    for every learner; validation, checkpoints and testing are not training time)."""
    rates = [r.tasks_per_s for r in runs if not math.isnan(r.tasks_per_s)]
    return float(np.mean(rates)) if rates else float("nan")


def format_p(p: float) -> str:
    """A p-value for the table; one below double precision's reach reads "< 1e-300", not 0."""
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test on per-episode differences: Student's t with n - 1
    degrees of freedom (scipy), as the table's column says."""
    if len(differences) < 2:
        return float("nan")
    if differences.std(ddof=1) == 0:  # t is 0 or infinite
        return 1.0 if differences.mean() == 0 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def mean_over_seeds(scores: list[np.ndarray]) -> np.ndarray:
    """Per-episode scores averaged over seeds, on the episodes all of them share."""
    n = min(len(s) for s in scores)
    return np.mean([s[:n] for s in scores], axis=0)


def episode_means(runs: list[Run]) -> np.ndarray | None:
    """``mean_over_seeds`` of the runs that have per-episode scores (None if none has)."""
    scores = [r.scores for r in runs if r.scores is not None]
    return mean_over_seeds(scores) if scores else None


def build_rows(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    finished = [run for run in runs if run.status == "finished"]
    labels = variant_labels(finished)
    for run in finished:
        key = (run.setting, labels[run.path])
        rows.setdefault(key, Row(key[1], run.setting, run.results["metric"])).runs.append(run)
    for row in rows.values():
        means = episode_means(row.runs)
        if means is not None:
            row.mean, row.ci95 = mean_ci95(means)
        else:
            row.mean = float(np.mean([r.results["mean"] for r in row.runs]))
        if len(row.runs) > 1:
            row.seed_std = float(np.std([r.results["mean"] for r in row.runs], ddof=1))
    for setting in {row.setting for row in rows.values()}:
        members = [row for row in rows.values() if row.setting == setting]
        higher_is_better = members[0].metric in HIGHER_IS_BETTER
        best = (max if higher_is_better else min)(members, key=lambda r: r.mean)
        best.best = True
        best_scores = episode_means(best.runs)
        for row in members:
            scores = episode_means(row.runs)
            if row is best or scores is None or best_scores is None:
                continue
            n = min(len(scores), len(best_scores))
            row.paired_n = n
            row.p_vs_best = paired_p_value(scores[:n] - best_scores[:n])
    return sorted(rows.values(), key=lambda r: (r.setting, r.algo))


def scale(metric: str) -> tuple[float, str]:
    return (100.0, "%") if metric == "accuracy" else (1.0, "")


def format_row(row: Row) -> dict[str, str]:
    factor, unit = scale(row.metric)
    results = [r.results for r in row.runs]
    return {
        "setting": row.setting,
        "algo": ("**" + row.algo + "**") if row.best else row.algo,
        "metric": row.metric,
        "test": f"{row.mean * factor:.2f}{unit} ± {row.ci95 * factor:.2f}{unit}",
        "seeds": str(len(row.runs)),
        "seed std": "" if math.isnan(row.seed_std) else f"{row.seed_std * factor:.2f}{unit}",
        "paired p vs best": "best" if row.best else
                            ("" if math.isnan(row.p_vs_best) else f"{format_p(row.p_vs_best)} (n={row.paired_n})"),
        "train time (s)": f"{np.mean([r['wall_time_s'] for r in results]):.0f}",
        "tasks/s": "" if math.isnan(mean_rate(row.runs)) else f"{mean_rate(row.runs):.1f}",
        "params": f"{results[0]['params']:,}",
    }


def markdown(rows: list[Row], runs: list[Run]) -> str:
    lines = ["# Comparison", "",
             "Test score: mean ± 95% CI over the test episodes (averaged over seeds episode by "
             "episode); the best of each setting in bold; p: paired t-test against the best on "
             "the identical test episodes (Student's t, n - 1 degrees of freedom); tasks/s: meta-training "
             "tasks per second of training time (steps x algo.meta_batch / training time).", ""]
    if rows:
        table = [format_row(row) for row in rows]
        header = list(table[0])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in table]
    else:
        lines.append("No finished runs.")
    incomplete = [r for r in runs if r.status != "finished"]
    if incomplete:
        lines += ["", "## Runs without results", "", "| run | algo | setting | status | detail |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.path} | {r.algo} | {r.setting} | {r.status} | {r.detail} |" for r in incomplete]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], runs: list[Run], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "algo", "metric", "status", "mean", "ci95", "seeds", "seed_std",
                         "best", "p_vs_best", "paired_n", "wall_time_s", "tasks_per_s", "params"])
        for row in rows:
            writer.writerow([row.setting, row.algo, row.metric, "finished", row.mean, row.ci95,
                             len(row.runs), row.seed_std, row.best, row.p_vs_best, row.paired_n,
                             np.mean([r.results["wall_time_s"] for r in row.runs]),
                             mean_rate(row.runs),
                             row.runs[0].results["params"]])
        for run in runs:
            if run.status != "finished":
                writer.writerow([run.setting, run.algo, "", run.status] + [""] * 10)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({row.setting for row in rows})
    fig, axes = plt.subplots(1, max(1, len(settings)), figsize=(4 + 1.2 * len(rows), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        members = [row for row in rows if row.setting == setting]
        factor, unit = scale(members[0].metric)
        ax.bar([row.algo.replace(" (", "\n(").replace(", ", "\n") for row in members],
               [row.mean * factor for row in members],
               yerr=[0 if math.isnan(row.ci95) else row.ci95 * factor for row in members],
               color=["tab:orange" if row.best else "tab:blue" for row in members], capsize=4)
        ax.set_title(setting, fontsize=9)
        ax.set_ylabel(f"test {members[0].metric}{' (%)' if unit else ''}")
        low = min(row.mean * factor for row in members)
        if members[0].metric == "accuracy":
            ax.set_ylim(max(0.0, low - 5), 100)
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def compare(paths, out_dir: Path) -> str:
    """Write comparison.md, comparison.csv and comparison.png into ``out_dir``; return the table."""
    return write_report([read_run(p) for p in find_run_dirs(paths)], out_dir)


def write_report(runs: list[Run], out_dir: Path) -> str:
    """The comparison files of ``runs`` in ``out_dir``; returns the markdown table."""
    rows = build_rows(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, runs)
    (out_dir / "comparison.md").write_text(text)
    write_csv(rows, runs, out_dir / "comparison.csv")
    if rows:
        plot(rows, out_dir / "comparison.png")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="metarun-compare", description="Compare finished metarun runs (run or sweep dirs).")
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write comparison.{md,csv,png} (default: the one dir given, "
                             "else the current directory)")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(map(str, missing))}")
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else Path.cwd())
    print(compare(args.dirs, out), end="")
    print(f"written: {out / 'comparison.md'}, comparison.csv, comparison.png")


if __name__ == "__main__":
    main()
