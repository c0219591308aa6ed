"""The meta-training loop: the same for every algorithm and data set."""
from __future__ import annotations

import copy
import logging
import signal
import statistics
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from metarun.algorithms import MetaLearner
from metarun.algorithms.base import Metrics, OuterStep
from metarun.data import EpisodeSource, eval_shape, train_shape
from metarun.engine.distributed import Ranks
from metarun.data import learner_spec
from metarun.engine.checkpoint import atomic_save, restore_rng_states, rng_states
from metarun.engine.cuda_graph import GraphedUpdate, portable_optimizer_state
from metarun.engine.divergence import check_step_is_finite
from metarun.engine.evaluate import evaluate
from metarun.engine.prefetch import Prefetcher, prefetching
from metarun.engine.precision import autocast_for, cpu_computes_bf16, resolve_precision
from metarun.engine.run_logger import RunLogger
from metarun.engine.stats import HIGHER_IS_BETTER, primary, scalar_name
from metarun.errors import ConfigError
from metarun.tasks import TaskBatch

log = logging.getLogger("metarun")


def parameter_groups(learner: torch.nn.Module, lr: float, lr_factors) -> list[dict]:
    """The learner's trained parameters, one group per module named in ``lr_factors`` (its rate
    ``lr`` x the factor; FEAT's set function at 10x its pre-trained backbone) and one for the rest
    at ``lr``. A name that is no module of the learner is a ConfigError naming the ones there are."""
    trained = [(name, p) for name, p in learner.named_parameters() if p.requires_grad]
    groups, taken = [], set()
    for module, factor in (lr_factors or {}).items():
        members = [(name, p) for name, p in trained
                   if (name == module or name.startswith(module + ".")) and name not in taken]
        if not members:
            modules = sorted({name.split(".")[0] for name, _ in trained})
            raise ConfigError(f"algo.optimizer.lr_factors.{module}", factor,
                              f"a key naming a module of the learner with trained parameters: {', '.join(modules)}")
        groups.append({"params": [p for _, p in members], "lr": lr * factor})
        taken.update(name for name, _ in members)
    rest = [p for name, p in trained if name not in taken]
    return [{"params": rest, "lr": lr}] + groups if rest else groups


def build_optimizer(learner: MetaLearner, cfg) -> torch.optim.Optimizer:
    params = parameter_groups(learner, cfg.lr, cfg.get("lr_factors"))
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    raise ConfigError("algo.optimizer.name", cfg.name, "one of adam, sgd")


def build_scheduler(optimizer, cfg):
    if cfg.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "linear":
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=cfg.end_factor,
                                                 total_iters=cfg.total_steps)
    if cfg.name == "cosine":  # half a cosine from the initial rate down to end_factor of it (null: 0) at total_steps
        floor = (cfg.end_factor or 0.0) * optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.total_steps, eta_min=floor)
    if cfg.name == "piecewise":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, piecewise_factor(cfg))
    raise ConfigError("algo.scheduler.name", cfg.name, "one of constant, step, linear, cosine, piecewise")


def piecewise_factor(cfg):
    """The rate's factor at a step of a piecewise constant schedule: 1 until the first milestone,
    then ``factors[i]`` from milestone i on (milestones in fractions of ``total_steps``, so that
    the schedule keeps its shape whatever horizon trainer.fit_max_steps fits; MetaOptNet's 0.06 /
    0.012 / 0.0024 of the initial rate at epochs 20 / 40 / 50 of 60)."""
    starts = [round(fraction * cfg.total_steps) for fraction in cfg.milestones]
    factors = list(cfg.factors)

    def factor(step: int) -> float:
        passed = sum(step >= start for start in starts)
        return factors[passed - 1] if passed else 1.0

    return factor


def expected_step_time(durations: list[float]) -> float:
    """What a step of the run will take, from the calibration steps' durations: the median of the
    second half (the first half is warm-up). Not the mean: early steps still decode images into
    the host memory cache now and then, and one such step in the sample tripled a Matching
    Networks run's estimate (143 ms against 50 ms a step: it trained 5 of its 15 minutes).
    Measured the other way, the median has been 15-30% optimistic for the MAML family on a
    2-core VM (steps slow down after the calibration), so such runs stop before their horizon,
    with the cosine at 75-86% of it; the log says so and how to repeat the run."""
    return statistics.median(durations[len(durations) // 2:])


class Trainer:
    """Meta-trains ``learner`` on episodes from ``sources["train"]``, validates on the fixed
    ``sources["val"]`` episodes, and keeps ``checkpoints/last.pt`` (for resuming) and
    ``checkpoints/best.pt`` (best validation score) in ``run_dir``. Under torchrun (``ranks``)
    each rank meta-trains on its share of every meta-batch; rank 0 alone validates, logs and
    writes checkpoints."""

    def __init__(self, cfg, learner: MetaLearner, sources: dict[str, EpisodeSource | None],
                 run_dir: Path, device: torch.device, ranks: Ranks | None = None,
                 on_config_change: Callable[[], None] = lambda: None):
        self.cfg, self.learner, self.sources = cfg, learner, sources
        self.learner_spec = learner_spec(cfg.data, sources)  # lets metarun.load use a checkpoint alone
        self.on_config_change = on_config_change  # called when training sets a key (fit_max_steps)
        self.run_dir, self.device = run_dir, device
        self.ranks = ranks or Ranks()
        self.ckpt_dir = run_dir / "checkpoints"
        self.optimizer = build_optimizer(learner, cfg.algo.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.algo.scheduler)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # the meta-training episode stream
        self.metric = sources["train"].metric
        self.higher_is_better = self.metric in HIGHER_IS_BETTER
        self.step, self.best, self.train_time = 0, None, 0.0
        self.step_time = 0.0  # the last step's duration: what the next one is expected to take
        self.saved_step: int | None = None  # the step that checkpoints/last.pt holds
        self.stop_signal: int | None = None  # SIGTERM / SIGINT received: stop after this step
        self.precision = resolve_precision(cfg.trainer.precision, device, learner.bf16_breaks)
        if cfg.trainer.cuda_graph and device.type != "cuda":
            raise ConfigError("trainer.cuda_graph", True, f"false on this {device.type} (CUDA graphs need device=cuda)")
        if cfg.trainer.cuda_graph and self.ranks.active:
            raise ConfigError("trainer.cuda_graph", True, "false under torchrun (one process records its own "
                              "updates; the gradients' all-reduce between ranks is not recorded)")
        if cfg.trainer.precision == "auto":
            why = (f" (not bf16 for {cfg.algo.name}: {learner.bf16_breaks})"
                   if resolve_precision("auto", device) != self.precision else "")
            log.info(f"trainer.precision=auto: {self.precision} on this {device.type}{why}")
        elif self.precision == "bf16" and learner.bf16_breaks:
            log.warning(f"trainer.precision=bf16 with {cfg.algo.name}: {learner.bf16_breaks}; "
                        "trainer.precision=auto takes fp32 for it")
        elif self.precision == "bf16" and device.type == "cpu" and not cpu_computes_bf16():
            log.warning("trainer.precision=bf16 on a CPU without bf16 instructions (AVX-512 BF16, AMX): "
                        "torch emulates it, several times slower than fp32; trainer.precision=auto "
                        "picks fp32 here")

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.learner.state_dict(), "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(), "step": self.step, "best": self.best,
                "train_time": self.train_time, "step_time": self.step_time, "rng": rng_states(self.generator),
                "config": OmegaConf.to_container(self.cfg, resolve=True), "learner": self.learner_spec,
                "precision": self.precision}  # what trainer.precision=auto resolved to

    def resume_from(self, path: Path, state: dict) -> None:
        """Continue from ``state``, the checkpoint loaded from ``path`` (its settings checked
        against the config by ``run_dir.check_resume``)."""
        self.learner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best, self.train_time = state["step"], state["best"], state["train_time"]
        self.step_time = state.get("step_time", 0.0)  # absent from checkpoints of older versions
        restore_rng_states(state["rng"], self.generator)
        self.saved_step = self.step
        log.info(f"resumed from {path} at step {self.step}")

    def finished(self) -> bool:
        """Whether training has nothing left to do: ``trainer.max_steps`` reached, or the budget."""
        return self.step >= self.cfg.trainer.max_steps or self.time_is_up()

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.higher_is_better else value < self.best

    # -- the loop ------------------------------------------------------------------------------
    def validate(self) -> float:
        val = self.cfg.trainer
        scores = evaluate(self.learner, self.sources["val"], val.val_episodes, self.cfg.eval.seed, "val",
                          eval_shape(self.cfg), self.device, desc="validating", progress=val.progress)
        return float(primary(scores).mean())

    def request_stop(self, signum: int, frame) -> None:
        if self.stop_signal is not None:  # asked twice: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.stop_signal = signum
        log.warning(f"{signal.Signals(signum).name}: stopping after the step in progress, with a "
                    "checkpoint (send it again to stop at once)")

    @contextmanager
    def stop_on_signals(self):
        """SIGTERM (a cluster's pre-emption notice) and SIGINT (Ctrl-C) end training after the
        step in progress, with ``last.pt`` written, so nothing is lost. Not under torchrun:
        there one rank could stop a step before the others and leave them waiting."""
        if self.ranks.active or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def fit(self) -> None:
        with self.stop_on_signals():
            if self.cfg.trainer.fit_max_steps is not None and self.step == 0:
                self.fit_max_steps_to_time()
            self.train_loop()
        if self.stop_signal is not None:
            name = signal.Signals(self.stop_signal).name
            log.warning(f"stopped by {name} at step {self.step}; {self.ckpt_dir / 'last.pt'} holds it. To "
                        f"resume: the same command + hydra.run.dir={self.run_dir} trainer.resume=true")
            raise SystemExit(128 + self.stop_signal)  # the status a shell reports for that signal

    def time_is_up(self) -> bool:
        """Whether another step would end past ``trainer.max_time_s`` of training, judged by the
        last step's duration (kept in checkpoints, so a resumed run decides as the interrupted
        one did). Rank 0 decides for all."""
        budget = self.cfg.trainer.max_time_s
        if budget is None:
            return False
        return bool(self.ranks.broadcast(self.train_time + self.step_time > budget))

    def updater(self, learner: MetaLearner, optimizer: torch.optim.Optimizer) -> Callable[[TaskBatch], Metrics]:
        """What makes one outer update of ``learner`` on a meta-batch: run eagerly, or recorded as a
        CUDA graph once and replayed (``trainer.cuda_graph``)."""
        def update(batch: TaskBatch) -> Metrics:
            if learner.owns_outer_update:  # e.g. a trust-region step: the optimiser is not used
                group = optimizer.param_groups[0]
                outer = OuterStep(scale=float(group["lr"]) / group.get("initial_lr", group["lr"]),
                                  average=self.ranks.average)
                with autocast_for(self.precision, self.device):
                    metrics = learner.meta_update(batch, outer)
                self.ranks.average_buffers(learner)
                return metrics
            optimizer.zero_grad(set_to_none=True)
            with autocast_for(self.precision, self.device):
                metrics = learner.meta_train_step(batch)
            self.ranks.average_gradients(learner)
            self.ranks.average_buffers(learner)
            optimizer.step()
            return metrics

        if self.cfg.trainer.cuda_graph:
            return GraphedUpdate(update, optimizer, self.device)
        return update

    @contextmanager
    def batches(self, shape):
        """The prefetching thread for meta-batches of ``shape`` where ``trainer.prefetch`` asks for
        one (else None), stopped on leaving."""
        if not prefetching(self.cfg.trainer.prefetch, self.device):
            yield None
            return
        prefetcher = Prefetcher(self.sources["train"], self.generator, self.cfg.algo.meta_batch, shape)
        try:
            yield prefetcher
        finally:
            prefetcher.close()

    def outer_update(self, update: Callable[[TaskBatch], Metrics], shape,
                     prefetcher: Prefetcher | None = None) -> tuple[dict[str, float], int]:
        """One outer update (``update``, from ``updater``) on a meta-batch drawn from the training
        stream (by ``prefetcher`` where there is one); returns its metrics and the number of tasks drawn."""
        batch = (prefetcher.next() if prefetcher is not None
                 else self.sources["train"].sample(self.generator, self.cfg.algo.meta_batch, *shape))
        tasks = len(batch)
        batch = self.ranks.shard(batch).to(self.device)
        metrics = {name: float(value) for name, value in update(batch).items()}
        return self.ranks.average_metrics(metrics), tasks

    def fit_max_steps_to_time(self) -> None:
        """``trainer.fit_max_steps``: times ``trainer.calibration_steps`` updates of a throwaway
        copy of the learner and its optimiser, puts the random states back (so training is the
        run that ``trainer.max_steps=N`` alone gives), and sets ``trainer.max_steps``, and with it
        a schedule's horizon that interpolates it, to that fraction of the steps that fit in
        the budget left. The calibration counts as training time. Rank 0 decides for all."""
        tcfg = self.cfg.trainer
        states = rng_states(self.generator)
        trial = copy.deepcopy(self.learner)
        update = self.updater(trial, build_optimizer(trial, self.cfg.algo.optimizer))
        durations = []
        with self.batches(train_shape(self.cfg)) as prefetcher:
            for _ in range(tcfg.calibration_steps):
                started = time.perf_counter()
                self.outer_update(update, train_shape(self.cfg), prefetcher)
                durations.append(time.perf_counter() - started)
        restore_rng_states(states, self.generator)
        calibration_time = sum(durations)
        self.train_time += calibration_time
        step_time = expected_step_time(durations)
        fitted = int(tcfg.fit_max_steps * (tcfg.max_time_s - self.train_time) / step_time)
        fitted = self.ranks.broadcast(fitted)
        if fitted < 1:
            raise ConfigError("trainer.max_time_s", tcfg.max_time_s,
                              f"enough for a step after the {tcfg.calibration_steps} calibration steps of "
                              f"trainer.fit_max_steps, which took {calibration_time:.1f} s")
        tcfg.max_steps = fitted
        self.on_config_change()
        self.scheduler = build_scheduler(self.optimizer, self.cfg.algo.scheduler)
        log.info(f"trainer.fit_max_steps={tcfg.fit_max_steps}: {tcfg.calibration_steps} calibration "
                 f"steps took {calibration_time:.1f} s ({step_time * 1e3:.1f} ms a step), so "
                 f"trainer.max_steps={tcfg.max_steps}. To repeat this run without the clock: "
                 f"{self.repeat_overrides(tcfg.max_steps)}")

    def repeat_overrides(self, steps: int) -> str:
        """The overrides that repeat a run stopped or fitted by the clock, step for step, without it."""
        repeat = f"trainer.max_time_s=null trainer.max_steps={steps}"
        if self.cfg.trainer.fit_max_steps is not None:
            repeat += " trainer.fit_max_steps=null"
        if self.cfg.algo.scheduler.get("total_steps") is not None:  # keep the schedule's horizon
            repeat += f" algo.scheduler.total_steps={self.cfg.algo.scheduler.total_steps}"
        return repeat

    def train_loop(self) -> None:
        tcfg, shape = self.cfg.trainer, train_shape(self.cfg)
        main = self.ranks.is_main
        logger = RunLogger(self.run_dir, resume_step=self.step) if main else None
        validating = main and tcfg.val_every > 0 and self.sources["val"] is not None
        bar = tqdm(total=tcfg.max_steps, initial=self.step, desc="meta-training",
                   disable=not (tcfg.progress and main), dynamic_ncols=True)
        self.learner.train()
        update = self.updater(self.learner, self.optimizer)
        out_of_time = self.time_is_up()  # trainer.max_time_s reached: training ends, testing goes on
        with self.batches(shape) as prefetcher:
            self.run_steps(update, shape, prefetcher, logger, bar, validating, out_of_time)
        bar.close()
        if main:
            logger.close()

    def run_steps(self, update, shape, prefetcher: Prefetcher | None, logger: RunLogger | None, bar,
                  validating: bool, out_of_time: bool) -> None:
        tcfg, main = self.cfg.trainer, self.ranks.is_main
        window_start, window_tasks = time.perf_counter(), 0
        while self.step < tcfg.max_steps and not out_of_time:
            started = time.perf_counter()
            metrics, tasks = self.outer_update(update, shape, prefetcher)
            check_step_is_finite(self.step + 1, metrics, self.learner, self.cfg.algo, self.saved_step)
            window_tasks += tasks
            self.advance_schedule()
            self.step += 1
            self.step_time = time.perf_counter() - started
            self.train_time += self.step_time
            out_of_time = self.time_is_up()
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)

            if not main:
                continue
            if self.step % tcfg.log_every == 0:
                now = time.perf_counter()
                record = {f"train/{k}": v for k, v in metrics.items()}
                record["lr"] = float(self.optimizer.param_groups[0]["lr"])  # a tensor under trainer.cuda_graph
                record["perf/tasks_per_s"] = window_tasks / (now - window_start)
                record.update(self.learner.logged_scalars())
                logger.log(self.step, record)
                window_start, window_tasks = now, 0
            last_step = self.step == tcfg.max_steps or out_of_time
            if validating and (self.step % tcfg.val_every == 0 or last_step):
                value = self.validate()
                logger.log(self.step, {f"val/{self.metric_name}": value})
                log.info(f"step {self.step}: val {self.metric_name} {value:.4f}")
                if self.improved(value):
                    self.best = value
                    atomic_save(self.state(), self.ckpt_dir / "best.pt")
            if self.step % tcfg.ckpt_every == 0 or last_step or self.stop_signal is not None:
                atomic_save(self.state(), self.ckpt_dir / "last.pt")
                self.saved_step = self.step
                self.learner.on_checkpoint(self.ckpt_dir, self.step)
            if self.stop_signal is not None:
                break
        if main and out_of_time and self.step < tcfg.max_steps:
            log.warning(self.time_budget_message())

    def advance_schedule(self) -> None:
        with warnings.catch_warnings():
            if self.learner.owns_outer_update:  # torch warns of a schedule whose optimiser never steps
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()

    def time_budget_message(self) -> str:
        tcfg = self.cfg.trainer
        return (f"trainer.max_time_s={tcfg.max_time_s} reached: training stopped at step {self.step} of "
                f"{tcfg.max_steps} after {self.train_time:.1f} s; the model of that step is tested. To "
                f"repeat this run step for step without the clock: {self.repeat_overrides(self.step)}")

    @property
    def metric_name(self) -> str:
        return scalar_name(self.metric)
