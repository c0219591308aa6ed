"""``metarun``: the Hydra entry point. Composes conf/, then train -> test, or eval only."""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra import compose
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from metarun.algorithms import build_learner
from metarun.compare import ERROR_FILE
from metarun.config_check import check_added_keys, check_episode_shapes, config_warnings, validate_config
from metarun.data import build_sources, eval_shape
from metarun.engine import distributed, openmp_wait
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.cpu_threads import threads_per_run
from metarun.engine.divergence import all_finite
from metarun.engine.environment import code_version, environment
from metarun.engine.host_memory import cache_host_memory
from metarun.engine.init_backbone import load_backbone
from metarun.data import lake_runs
from metarun.engine.evaluate import evaluate, score_tasks
from metarun.engine.reproducibility import deterministic_gpu_kernels, seed_everything
from metarun.engine.run_dir import (EarlierRunError, RunDirError, RunDirLock, check_resume, record_resume,
                                    write_run_config)
from metarun.engine.run_logger import RunLogger
from metarun.engine.stats import mean_ci95, primary, scalar_name
from metarun.engine.trainer import Trainer
from metarun.errors import ConfigError, DivergedError, MetarunError
from metarun.rl.report import describe_rl, plot_adaptation, rl_results

log = logging.getLogger("metarun")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def test(cfg, learner, sources, device, run_dir: Path, checkpoint: Path, state: dict, train_time: float,
         val_best: float | None = None) -> dict:
    """Score the learner with the parameters of ``state`` (loaded from ``checkpoint``) on the
    fixed test episodes; write results.json and the per-episode scores."""
    if not all_finite(state["model"].values()):
        raise DivergedError(f"{checkpoint} holds non-finite parameters (step {state['step']}): no test "
                            "score is computed from it")
    learner.load_state_dict(state["model"])
    data = cfg.data
    started = time.perf_counter()
    if cfg.eval.protocol == "lake_runs":
        runs = lake_runs.read_runs(lake_runs.locate_runs(
            Path(cfg.paths.data_dir).expanduser() / "omniglot", data.source != "local", data.download_url))
        tasks = (lake_runs.run_task(r, data.image_size, sources["train"].normalise) for r in runs)
        scores = score_tasks(learner, tasks, len(runs),
                             "accuracy", device, desc="Lake et al. runs", progress=cfg.trainer.progress)
    else:
        scores = evaluate(learner, sources["test"], cfg.eval.episodes, cfg.eval.seed, "test",
                          eval_shape(cfg), device, desc="testing", progress=cfg.trainer.progress)
    mean, ci95 = mean_ci95(primary(scores))
    results = {
        "metric": sources["test"].metric, "mean": mean, "ci95": ci95, "n_episodes": len(scores),
        "wall_time_s": train_time, "eval_time_s": time.perf_counter() - started,
        "params": sum(p.numel() for p in learner.parameters()),
        "algo": cfg.algo.name, "data": data.name, "split": data.get("split"),
        "ways": data.get("ways"), "shots": data.get("shots"), "queries": data.get("queries"),
        "eval_seed": cfg.eval.seed, "transductive_bn": learner.transductive,
        "checkpoint": str(checkpoint), "step": state["step"], "seed": cfg.seed,
        "training_precision": state.get("precision"),  # fp32 or bf16 (None: an older checkpoint)
        "val_best": val_best, "protocol": cfg.eval.protocol, "environment": environment(device),
    }
    if cfg.eval.protocol == "lake_runs":
        results.update(ways=lake_runs.WAYS, shots=1, queries=1, error_rate_percent=100 * (1 - mean),
                       reference_error_rates_percent=lake_runs.REFERENCE_ERRORS)
    if results["metric"] == "return":
        results.update(rl_results(cfg, sources["test"], scores))
        if "return_after_steps" in results:
            plot_adaptation(results, run_dir / "return_after_steps.png")
    np.save(run_dir / "episode_scores.npy", scores)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    logger = RunLogger(run_dir)
    test_metric = {f"test/{scalar_name(results['metric'])}": mean}
    if "regret" in results:
        test_metric["test/regret"] = results["regret"]["mean"]
    logger.log(state["step"], test_metric)
    logger.log_hparams(hyper_parameters(cfg), test_metric)
    logger.close()
    return results


def hyper_parameters(cfg) -> dict:
    """The scalar settings that tell runs apart, flattened (``algo.inner_lr``, ``data.shots``...)."""
    flat = {"seed": cfg.seed, "backbone": cfg.backbone.name, "trainer.max_steps": cfg.trainer.max_steps,
            "trainer.precision": cfg.trainer.precision}

    def add(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                add(f"{prefix}.{key}", value)
        else:
            flat[prefix] = node

    for group in ("algo", "data"):
        add(group, OmegaConf.to_container(cfg[group], resolve=True))
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def describe(results: dict) -> str:
    if results["metric"] == "return":
        return describe_rl(results)
    if results.get("protocol") == "lake_runs":
        references = ", ".join(f"{k} {v}%" for k, v in results["reference_error_rates_percent"].items())
        return (f"Lake et al. 2015 one-shot runs ({results['algo']}, 20 runs of 20-way 1-shot): error "
                f"{results['error_rate_percent']:.2f}% ± {100 * results['ci95']:.2f}% (95% CI over runs); "
                f"published: {references}")
    scale = 100 if results["metric"] == "accuracy" else 1
    unit = "%" if results["metric"] == "accuracy" else ""
    setting = (f"{results['ways']}-way {results['shots']}-shot" if results["metric"] == "accuracy"
               else f"{results['shots']}-shot")
    return (f"test {results['metric']} ({results['algo']}, {results['data']} {setting}, "
            f"{results['n_episodes']} episodes): {results['mean'] * scale:.2f}{unit} "
            f"± {results['ci95'] * scale:.2f}{unit} (95% CI)")


def run(cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks | None = None,
        device_name: str | None = None, hydra_cfg=None) -> dict | None:
    """One run into ``run_dir``: meta-train then test (mode=train), or test a checkpoint (mode=eval).
    Under torchrun every rank calls this; rank 0 alone holds the run dir's lock, tests and
    returns the results. ``hydra_cfg``: Hydra's config, when Hydra launched the run."""
    ranks = ranks or distributed.Ranks()
    with RunDirLock(run_dir) if ranks.is_main else nullcontext():
        return run_locked(cfg, run_dir, ranks, device_name, hydra_cfg)


def checkpoint_to_continue(cfg, run_dir: Path) -> Path | None:
    """``trainer.ckpt_path``, or with ``trainer.resume`` the run dir's last.pt when it exists."""
    if cfg.trainer.ckpt_path:
        return Path(cfg.trainer.ckpt_path)
    last = run_dir / "checkpoints" / "last.pt"
    if cfg.trainer.resume:
        if last.exists():
            return last
        log.info(f"no checkpoint in {last.parent} yet; starting from step 0")
    return None


def refuse_earlier_run(run_dir: Path) -> None:
    """A new run must not start in a run dir that holds a run that got as far as a checkpoint or a
    result: its curves and results would mix with the earlier run's."""
    for earlier in (run_dir / "checkpoints" / "last.pt", run_dir / "results.json"):
        if earlier.exists():
            raise EarlierRunError(run_dir, earlier)


def run_locked(cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks, device_name: str | None,
               hydra_cfg) -> dict | None:
    main = ranks.is_main
    code_version()  # the code as it is when the run starts, for results.json
    if hydra_cfg is not None:
        check_added_keys(list(hydra_cfg.overrides.task),
                         lambda overrides: compose(config_name=hydra_cfg.job.config_name, overrides=overrides))
    checkpoint = checkpoint_to_continue(cfg, run_dir) if cfg.mode == "train" else None
    state, changes = None, {}
    if checkpoint is not None:  # checked before anything is written: a refused resume touches nothing
        state = load_checkpoint(checkpoint, cfg.trainer.trust_checkpoint)
        if cfg.trainer.fit_max_steps is not None:  # the steps fitted when the run began
            cfg.trainer.max_steps = state["config"]["trainer"]["max_steps"]
        changes = check_resume(checkpoint, state["config"], OmegaConf.to_container(cfg, resolve=True))
    if main and cfg.mode == "train" and checkpoint is None:
        refuse_earlier_run(run_dir)
    if main:
        (run_dir / ERROR_FILE).unlink(missing_ok=True)  # a failure of an earlier attempt
        if state is None:  # a resumed run's record changes only once it trains on (below)
            write_run_config(run_dir, cfg, hydra_cfg)
    validate_config(cfg)
    for warning in config_warnings(cfg):
        log.warning(warning)
    ranks.check_meta_batch(cfg.algo.meta_batch)
    device = pick_device(device_name or cfg.device.name)
    launcher_cfg = hydra_cfg.launcher if hydra_cfg is not None else None
    threads = threads_per_run(cfg.device.threads, launcher_cfg, distributed.local_processes())
    if threads is not None:
        torch.set_num_threads(threads)
    cached = cache_host_memory(cfg.device.cache_host_memory)
    log.info(f"device {device}, {torch.get_num_threads()} torch CPU thread(s), "
             f"host memory cache {'on' if cached else 'off'}")
    if openmp_wait.chosen and device.type == "cpu":
        log.info(f"OpenMP wait: {openmp_wait.chosen['why']}")
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic and device.type == "cuda":
        deterministic_gpu_kernels()
    tested_state = None
    if cfg.mode == "eval":
        tested_state = load_checkpoint(Path(cfg.trainer.ckpt_path), cfg.trainer.trust_checkpoint)
    sources = build_sources(cfg.data, cfg.paths, trained_class_split(cfg, state or tested_state))
    check_episode_shapes(cfg, sources)
    if main and cfg.data.name == "folder":
        write_class_split(run_dir, sources)
    for source in sources.values():
        if source is not None:
            source.to(device)
    train = sources["train"]
    learner = build_learner(cfg, train.kind, train.image_shape, train.n_classes, train.action_size).to(device)

    if cfg.mode == "eval":
        return evaluate_checkpoint(cfg, learner, sources, device, run_dir, tested_state) if main else None

    if state is None and cfg.trainer.init_backbone:
        load_backbone(learner, Path(cfg.trainer.init_backbone).expanduser(), cfg.trainer.trust_checkpoint)
    trainer = Trainer(cfg, learner, sources, run_dir, device, ranks,
                      on_config_change=lambda: write_run_config(run_dir, cfg, hydra_cfg) if main else None)
    if state is not None:
        trainer.resume_from(checkpoint, state)
    results_file = run_dir / "results.json"
    if state is not None and results_file.exists() and trainer.finished():
        results = json.loads(results_file.read_text())
        log.info(f"{run_dir} has finished already (step {trainer.step} of trainer.max_steps="
                 f"{cfg.trainer.max_steps}); its results (to test it with other eval settings: "
                 f"mode=eval trainer.ckpt_path={checkpoint}):")
        log.info(describe(results))
        return results
    if main and state is not None:
        write_run_config(run_dir, cfg, hydra_cfg)
        record_resume(run_dir, checkpoint, trainer.step, changes)
        if changes:
            log.info("resumed with changed settings (recorded in resumes.jsonl): " + ", ".join(
                f"{key} {old} -> {new}" for key, (old, new) in changes.items()))
    log.info(f"run dir {run_dir}  (to resume it: same command + hydra.run.dir={run_dir} "
             "trainer.resume=true)")
    trainer.fit()
    distributed.stop(ranks)  # testing is rank 0's alone
    if not main:
        return None
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    tested = best if cfg.eval.checkpoint == "best" and best.exists() else last
    results = test(cfg, learner, sources, device, run_dir, tested, load_checkpoint(tested),
                   trainer.train_time, trainer.best)
    log.info(describe(results))
    return results


def trained_class_split(cfg, state: dict | None) -> dict[str, list[str]] | None:
    """The classes of each split that the checkpoint ``state`` was trained with, when this run
    reads the same image folder (data=folder): a resume or a test must not split it anew."""
    if state is None or cfg.data.name != "folder":
        return None
    trained = state["config"]["data"]
    if trained["name"] != "folder" or Path(trained["root"]).expanduser().resolve() != \
            Path(cfg.data.root).expanduser().resolve():
        return None
    return state.get("learner", {}).get("class_split")


def write_class_split(run_dir: Path, sources) -> None:
    """split.json: the class folders of each split, for the user (checkpoints hold it too)."""
    split = {name: source.class_names for name, source in sources.items() if source is not None}
    (run_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n")


def evaluate_checkpoint(cfg, learner, sources, device, run_dir: Path, state: dict) -> dict:
    """mode=eval: score ``trainer.ckpt_path`` (loaded as ``state``) on the test episodes of this config."""
    checkpoint = Path(cfg.trainer.ckpt_path)
    trained = state["config"]
    for group in ("algo", "backbone"):
        if trained[group]["name"] != cfg[group].name:
            raise ConfigError(group, cfg[group].name, f"{trained[group]['name']}, the {group} "
                              f"that {checkpoint} was trained with")
    if cfg.eval.protocol == "lake_runs" and trained["data"].get("split") != "lake":
        raise ConfigError("eval", "lake_runs", f"a checkpoint trained with data.split=lake; "
                          f"{checkpoint} was trained on the {trained['data'].get('split')} split, "
                          "which includes characters of the runs' evaluation alphabets")
    results = test(cfg, learner, sources, device, run_dir, checkpoint, state, train_time=state["train_time"])
    log.info(describe(results))
    return results


def objective(results: dict | None, key: str) -> float:
    """What the run returns to an optimising sweeper: NaN (a failed trial, to Optuna) when the
    run failed or has no such value (no validation)."""
    value = (results or {}).get(key)
    return float("nan") if value is None else float(value)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    if distributed.launched_world_size() > 1 and hydra_cfg.mode == RunMode.MULTIRUN:
        print("metarun: error: --multirun under torchrun: one run per torchrun launch; sweep with a "
              "launcher instead (hydra/launcher=joblib or submitit_*)", file=sys.stderr)
        sys.exit(2)
    ranks, device_name = distributed.start(cfg.device.name)
    # every rank works in rank 0's run dir (their own Hydra dirs may differ by a timestamp)
    run_dir = ranks.broadcast(Path(hydra_cfg.runtime.output_dir))
    results = None
    try:
        results = run(cfg, run_dir, ranks, device_name, hydra_cfg)
    except Exception as e:
        if not ranks.is_main:  # rank 0 reports it
            if isinstance(e, MetarunError):
                sys.exit(2)
            raise
        summary = f"metarun: error: {e}" if isinstance(e, MetarunError) else traceback.format_exc()
        if not isinstance(e, RunDirError):  # (a run dir another run holds or held is not this run's to write)
            # the reason stays with the run, for metarun-compare and for whoever resumes it; a
            # run that failed before its config was written (a refused key) is listed all the same
            (run_dir / ERROR_FILE).write_text(summary + "\n")
            if not (run_dir / ".hydra" / "config.yaml").exists():
                write_run_config(run_dir, cfg, hydra_cfg)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # record the failure and let the other runs of the sweep go on; the sweep's
            # comparison lists it and the sweep exits with status 1
            log.error(f"run {run_dir} failed: {e}")
        elif isinstance(e, MetarunError):
            print(summary, file=sys.stderr)
            sys.exit(2)
        else:
            raise
    finally:
        distributed.stop(ranks, wait_for_others=False)
    return objective(results, cfg.optimized_metric) if ranks.is_main else None


def main() -> None:
    """The ``metarun`` command (``metarun predict ...``: ``metarun.predict``). Under torchrun only
    rank 0 keeps a Hydra output dir and log file."""
    if sys.argv[1:2] == ["predict"]:
        from metarun.predict import main as predict_main
        predict_main(sys.argv[2:])
        return
    if distributed.launched_rank() > 0:
        sys.argv += ["hydra/job_logging=disabled"]
        if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv):
            sys.argv.append("hydra.run.dir=.")
    hydra_main()


if __name__ == "__main__":
    main()
