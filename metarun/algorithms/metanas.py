"""MetaNAS (Elsken, Staffler, Metzen & Hutter, CVPR 2020, "Meta-Learning of Neural Architectures
for Few-Shot Learning", Algorithms 1-2): DARTS as the task learner, Reptile as the meta-learner,
over both the network's weights w and its architecture parameters alpha.

    for each task T_i in the meta-batch:                        (DARTS, first order)
        for k = 0 .. K-1, temperature t_k from t_max down to t_min:
            alpha <- Adam step on L(w, alpha; a mini-batch of T_i)       (after the warm-up)
            w     <- Adam step on L(w, alpha; another mini-batch of T_i)
        (w_i, alpha_i) = the result
    w     <- w + lambda_w * mean_i (w_i - w)                          (Reptile)
    alpha <- alpha + lambda_alpha * mean_i (alpha_i - alpha)

The network is a DARTS search network (``metarun/backbones/darts_cells.py``, sized by
``algo.search_space``) with a per-way linear head; mixed edges weigh their operations by
softmax(alpha / t). As in the authors' code, t falls linearly over each task's inner steps
(1.0 to 0.05), so a task ends on a nearly discrete architecture; the inner optimisers are Adam
with beta1 = 0, the weights' gradients clipped at norm 5. During the warm-up
(``algo.warm_up_fraction`` of meta-training) the architecture is not adapted, and so not
meta-learned. At test, after adapting to the support set, the operations whose weight is below
``algo.prune_threshold`` are pruned before the queries are predicted.

Like Reptile here, a task's support and query examples are its training examples in
meta-training; the outer update is handed to the trainer as the gradient (w - mean w_i), its
optimiser SGD with rate lambda_w, the architecture's share scaled by lambda_alpha / lambda_w.
``genotype()`` is the meta-architecture's discrete cell pair; it is written beside every
checkpoint (``checkpoints/genotype.json``, ``genotypes.jsonl``, ``cells.png``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from metarun.algorithms.base import MetaLearner, Metrics, mean_metrics
from metarun.algorithms.batch_norm import batch_statistics_only, predict_queries
from metarun.algorithms.reptile import EVAL_BATCH_SEED, mini_batches
from metarun.backbones.cell_picture import draw_cells
from metarun.backbones.darts_cells import CellNetwork, all_edges, parse_genotype
from metarun.tasks import Task, TaskBatch

ARCHITECTURE = ("0.alpha_normal", "0.alpha_reduce")
GRADIENT_CLIP = 5.0  # the weights' inner gradients, as DARTS clips them


class MetaNAS(MetaLearner):
    bf16_breaks = "its inner Adam steps, as Reptile's, are below bf16's resolution of the weights"

    def __init__(self, network: CellNetwork, n_outputs: int, cfg, trainer_cfg):
        super().__init__("image")
        self.network = network
        self.model = nn.Sequential(network, nn.Linear(network.out_features, n_outputs))
        self.has_batchnorm = batch_statistics_only(self.model)
        self.transductive = self.has_batchnorm and cfg.transductive_bn
        self.cfg, self.trainer_cfg = cfg, trainer_cfg
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # checkpointed with the model

    def temperatures(self, steps: int, adapting_architecture: bool) -> list[float]:
        if not adapting_architecture:
            return [self.cfg.temperature.start] * steps
        return torch.linspace(self.cfg.temperature.start, self.cfg.temperature.end, steps).tolist()

    def adapt(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, generator,
              adapting_architecture: bool) -> tuple[dict[str, torch.Tensor], Metrics, float]:
        """DARTS (first order) on (x, y) from the meta-parameters: the adapted parameters, the
        last step's metrics and the temperature it ended at."""
        params = {k: v.detach().clone().requires_grad_() for k, v in self.model.named_parameters()}
        weights = [p for name, p in params.items() if name not in ARCHITECTURE]
        architecture = [params[name] for name in ARCHITECTURE]
        weight_step = torch.optim.Adam(weights, lr=self.cfg.inner_lr, betas=(0.0, 0.999))
        architecture_step = torch.optim.Adam(architecture, lr=self.cfg.architecture_lr, betas=(0.0, 0.999))
        batches = mini_batches(len(x), batch_size, 2 * steps, generator)
        metrics, temperatures = {}, self.temperatures(steps, adapting_architecture)
        for temperature in temperatures:
            self.network.temperature = temperature
            if adapting_architecture:
                index = next(batches)
                loss = self.task_loss(functional_call(self.model, params, (x[index],)), y[index])
                for p, g in zip(architecture, torch.autograd.grad(loss, architecture, allow_unused=True)):
                    p.grad = g
                architecture_step.step()
            index = next(batches)
            prediction = functional_call(self.model, params, (x[index],))
            for p, g in zip(weights, torch.autograd.grad(self.task_loss(prediction, y[index]), weights,
                                                         allow_unused=True)):  # (a network without reduction cells)
                p.grad = g
            nn.utils.clip_grad_norm_([p for p in weights if p.grad is not None], GRADIENT_CLIP)
            weight_step.step()
            metrics = self.task_metrics(prediction.detach(), y[index])
        return {k: v.detach() for k, v in params.items()}, metrics, temperatures[-1]

    def warming_up(self) -> bool:
        return int(self.updates) < round(self.cfg.warm_up_fraction * self.trainer_cfg.max_steps)

    def meta_train_step(self, batch: TaskBatch) -> Metrics:
        adapting_architecture = not self.warming_up()
        self.updates += 1
        meta = dict(self.model.named_parameters())
        share = self.cfg.architecture_meta_lr / self.cfg.optimizer.lr  # lambda_alpha / lambda_w
        per_task = []
        for task in batch:
            x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
            adapted, metrics, _ = self.adapt(x, y, self.cfg.inner_steps, self.cfg.inner_batch, None,
                                             adapting_architecture)
            for name, p in meta.items():
                step = (p.detach() - adapted[name]) / len(batch) * (share if name in ARCHITECTURE else 1.0)
                p.grad = step if p.grad is None else p.grad + step
            per_task.append(metrics)
        self.network.temperature = self.cfg.temperature.start
        return mean_metrics(per_task)

    def adapt_and_predict(self, task: Task) -> torch.Tensor:
        generator = torch.Generator().manual_seed(EVAL_BATCH_SEED)
        with torch.enable_grad():
            adapted, _, temperature = self.adapt(task.support_x, task.support_y, self.cfg.eval_inner_steps,
                                                 self.cfg.eval_inner_batch, generator, adapting_architecture=True)
        self.network.temperature = temperature
        self.network.masks = {cell: torch.softmax(adapted[f"0.alpha_{cell}"] / temperature, -1) < self.cfg.prune_threshold
                              for cell in ("normal", "reduce")}
        try:
            return predict_queries(self.model, lambda x: functional_call(self.model, adapted, (x,)), task,
                                   per_query=self.has_batchnorm and not self.cfg.transductive_bn)
        finally:
            self.network.masks, self.network.temperature = None, self.cfg.temperature.start

    def genotype(self) -> dict:
        """The meta-architecture's cells (softmax at the start temperature), DARTS's parse."""
        with torch.no_grad():
            return {"nodes": self.network.nodes, "primitives": list(self.network.primitives),
                    **{cell: parse_genotype(torch.softmax(getattr(self.network, f"alpha_{cell}"), -1),
                                            self.network.nodes, self.network.primitives)
                       for cell in ("normal", "reduce")}}

    def logged_scalars(self) -> dict[str, float]:
        """The meta-architecture's operation weights, edge by edge (TensorBoard: arch/...)."""
        scalars = {}
        with torch.no_grad():
            for cell in ("normal", "reduce"):
                weights = torch.softmax(getattr(self.network, f"alpha_{cell}"), -1)
                for (node, source), row in zip(all_edges(self.network.nodes), weights):
                    for name, w in zip(self.network.primitives, row):
                        scalars[f"arch/{cell}/node{node}_from{source}/{name}"] = float(w)
        return scalars

    def on_checkpoint(self, directory: Path, step: int) -> None:
        genotype = self.genotype()
        (directory / "genotype.json").write_text(json.dumps(genotype, indent=1) + "\n")
        with (directory.parent / "genotypes.jsonl").open("a") as history:
            history.write(json.dumps({"step": step, **genotype}) + "\n")
        draw_cells(genotype, directory.parent / "cells.png")
