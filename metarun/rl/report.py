"""What a meta-RL test adds to results.json: returns per adaptation stage, regret, the reference
policies' returns on the same test tasks (paired), and the published numbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metarun.data.episodes import EpisodeSource, split_seed
from metarun.engine.stats import mean_ci95
from metarun.rl.published import published_returns
from metarun.rl.references import reference_returns


def task_family(data_cfg) -> str:
    if data_cfg.name == "bandits":
        return f"bandits {data_cfg.arms} arms, {data_cfg.horizon} pulls"
    if data_cfg.name == "gym":
        horizon = f", horizon {data_cfg.horizon}" if data_cfg.horizon is not None else ""
        return f"{data_cfg.env_id}{horizon}"
    return f"{data_cfg.name}, horizon {data_cfg.horizon}, reward -{data_cfg.reward}"


def summary(values) -> dict:
    mean, ci95 = mean_ci95(values)
    return {"mean": mean, "ci95": ci95}


def rl_results(cfg, source: EpisodeSource, scores: np.ndarray) -> dict:
    """``scores`` [tasks, stages]: the learner's returns on the fixed test tasks."""
    tasks = list(source.fixed_episodes(cfg.eval.episodes, cfg.eval.seed, "test"))
    tasks = type(tasks[0]).cat(tasks)
    final = scores[:, -1]
    results = {"task_family": task_family(cfg.data)}
    if scores.shape[1] > 1:
        results["return_after_steps"] = [summary(scores[:, k]) for k in range(scores.shape[1])]
    if hasattr(tasks, "optimal_return"):
        results["regret"] = summary(tasks.optimal_return().cpu().numpy() - final)
    references = reference_returns(cfg.data, tasks, split_seed(cfg.eval.seed, "references"))
    results["references"] = {name: {**summary(values), "learner_minus_reference": summary(final - values)}
                             for name, values in references.items()}
    results["published"] = published_returns(cfg.data)
    return results


def plot_adaptation(results: dict, path: Path) -> None:
    """The test return after 0, 1, ... policy-gradient steps (95% CIs), with the reference
    policies' returns and the published curve where there is one, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = results["return_after_steps"]
    steps = np.arange(len(stages))
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.errorbar(steps, [s["mean"] for s in stages], yerr=[s["ci95"] for s in stages], marker="o", capsize=3,
                  label=f"{results['algo']} (metarun)")
    for name, reference in results["references"].items():
        axes.axhline(reference["mean"], linestyle=":", color="grey")
        axes.annotate(name, (steps[-1], reference["mean"]), fontsize=8, ha="right", va="bottom")
    for name, published in (results.get("published") or {}).items():
        if isinstance(published, list) and len(published) == len(stages):
            axes.plot(steps, published, marker="s", linestyle="--", label=f"{name} (paper)")
    axes.set_xticks(steps)
    axes.set_xlabel("policy-gradient steps on the test task")
    axes.set_ylabel("average return")
    axes.set_title(results["task_family"], fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def describe_rl(results: dict) -> str:
    lines = [f"test return ({results['algo']}, {results['task_family']}, {results['n_episodes']} tasks): "
             f"{results['mean']:.2f} ± {results['ci95']:.2f} (95% CI)"]
    if "return_after_steps" in results:
        stages = " / ".join(f"{s['mean']:.2f}" for s in results["return_after_steps"])
        lines.append(f"  after 0..{len(results['return_after_steps']) - 1} adaptation steps: {stages}")
    if "regret" in results:
        lines.append(f"  regret: {results['regret']['mean']:.2f} ± {results['regret']['ci95']:.2f}")
    for name, ref in results["references"].items():
        diff = ref["learner_minus_reference"]
        lines.append(f"  {name:>15}: {ref['mean']:.2f} ± {ref['ci95']:.2f}   "
                     f"(learner - {name}: {diff['mean']:+.2f} ± {diff['ci95']:.2f}, paired)")
    if results.get("published"):
        lines.append("  published: " + ", ".join(f"{k} {v}" for k, v in results["published"].items()))
    return "\n".join(lines)
