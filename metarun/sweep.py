"""End of a multirun: compare its runs (see ``metarun.compare``), failed ones included."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from metarun.compare import find_run_dirs, read_run, write_report


class CompareOnMultirunEnd(Callback):
    """Writes comparison.{md,csv,png} into the sweep dir when a multirun ends, and makes the
    sweep exit with status 1 when any of its runs failed (after the others have run)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = [read_run(path) for path in find_run_dirs([sweep_dir])]
        print(write_report(runs, sweep_dir), end="")
        print(f"comparison written to {sweep_dir}/comparison.md, .csv, .png")
        failed = [run.path for run in runs if run.status == "failed"]
        if failed:
            raise SystemExit(f"metarun: {len(failed)} run(s) of the sweep failed: "
                             + ", ".join(map(str, failed)))
