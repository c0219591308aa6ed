"""Where a run's numbers go: TensorBoard event files and a plain metrics.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


class RunLogger:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        """``resume_step``: training goes on from this step (0: starts), so records written after
        it, by an earlier attempt, are dropped: they will be written again. None: appends."""
        self.jsonl = run_dir / "metrics.jsonl"
        if resume_step is not None and self.jsonl.exists():
            kept = [line for line in self.jsonl.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            self.jsonl.write_text("".join(line + "\n" for line in kept))
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def log_hparams(self, params: dict, metrics: dict[str, float]) -> None:
        """The run's row in TensorBoard's HPARAMS table: its hyper-parameters and final metrics
        (written into this run's own event dir, so a sweep shows one row per run)."""
        experiment, start, end = hparams(params, metrics)
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()
