"""What a meta-RL test adds to results.json: returns per adaptation stage, regret, the reference
policies' returns on the same test tasks (paired), and the published numbers."""
from __future__ import annotations

import numpy as np

from metarun.data.episodes import EpisodeSource, split_seed
from metarun.engine.stats import mean_ci95
from metarun.rl.published import published_returns
from metarun.rl.references import reference_returns


def task_family(data_cfg) -> str:
    if data_cfg.name == "bandits":
        return f"bandits {data_cfg.arms} arms, {data_cfg.horizon} pulls"
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
