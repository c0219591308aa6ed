"""Episode sampling against an earlier version of the sampler, in one process, alternating.

    python scripts/bench_sampler.py                    # against the sampler of commit 803abc4
    python scripts/bench_sampler.py --against HEAD~3   # any revision's metarun/data/episodes.py

Both samplers draw from the same Omniglot training split (Vinyals, 28x28, rotations as classes,
4,400 classes with the validation hold-out) with the same seed; the script first checks that they
give the same episodes, then times them in alternating blocks, so that a change in the machine's
speed hits both. Prints episodes per second for each, and the ratio.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

import metarun.data.omniglot as omniglot
from metarun.data import build_sources

ROOT = Path(__file__).resolve().parents[1]


def sampler_module(revision: str):
    """metarun/data/episodes.py as it was at ``revision``, imported under another name."""
    text = subprocess.run(["git", "show", f"{revision}:metarun/data/episodes.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "episodes_then.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("episodes_then", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_source(source_class, overrides: list[str]):
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=omniglot", *overrides])
    now = omniglot.FewShotImageSource
    omniglot.FewShotImageSource = source_class
    try:
        return build_sources(cfg.data, cfg.paths)["train"]
    finally:
        omniglot.FewShotImageSource = now


def episodes_per_second(source, meta_batch: int, shape: tuple[int, int, int], seconds: float) -> float:
    generator = torch.Generator().manual_seed(0)
    source.sample(generator, meta_batch, *shape)
    batches, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        source.sample(generator, meta_batch, *shape)
        batches += 1
    return batches * meta_batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="803abc4", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per contender")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a block")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.image_size=84")
    args = parser.parse_args()
    then = train_source(sampler_module(args.against).FewShotImageSource, args.overrides)
    now = train_source(omniglot.FewShotImageSource, args.overrides)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {now.n_classes} training classes")
    for meta_batch, shape in ((32, (5, 1, 15)), (1, (5, 1, 15)), (32, (20, 5, 15))):
        a = then.sample(torch.Generator().manual_seed(1), meta_batch, *shape)
        b = now.sample(torch.Generator().manual_seed(1), meta_batch, *shape)
        same = torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
        rates = {"then": [], "now": []}
        for _ in range(args.rounds):
            for name, source in (("then", then), ("now", now)):
                rates[name].append(episodes_per_second(source, meta_batch, shape, args.seconds))
        then_rate, now_rate = (statistics.median(rates[k]) for k in ("then", "now"))
        ways, shots, queries = shape
        print(f"{ways}-way {shots}-shot {queries} queries, meta-batch {meta_batch}: {args.against} "
              f"{then_rate:,.0f} episodes/s, now {now_rate:,.0f} ({now_rate / then_rate:.1f}x); "
              f"same episodes: {'yes' if same else 'NO'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
