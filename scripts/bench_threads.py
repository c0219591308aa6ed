"""Meta-training speed under OpenMP wait settings, alone and with a competing process on the
same cores.

    python scripts/bench_threads.py              # ProtoNet's recipe step and second-order MAML's
    python scripts/bench_threads.py --rounds 3 --settings default PASSIVE GOMP_SPINCOUNT=1000

Each measurement is a fresh process (OpenMP reads its settings when torch loads) timing outer
updates for --seconds; the competitor is a second process multiplying matrices on as many threads.
Nothing set is torch's default (threads spin for a while at the end of every parallel region);
PASSIVE sleeps at once; GOMP_SPINCOUNT bounds GNU OpenMP's spinning (docs/performance.md).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

WORKLOADS = {
    "protonet": ["+experiment=protonet_omniglot_15min"],
    "maml": ["+experiment=maml_omniglot_15min", "trainer.precision=fp32"],
}


def worker(workload: str, seconds: float) -> None:
    # torch loads here, after the OpenMP settings of this process are in place
    from bench_configs import steps_per_second, training_step

    step = training_step(WORKLOADS[workload])
    step()
    print(steps_per_second(step, seconds))


def competitor(seconds: float) -> None:
    import torch
    a = torch.randn(512, 512)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        a = torch.tanh(a @ a)


def measure(workload: str, setting: str, competing: bool, seconds: float) -> float:
    """Steps/s of ``workload`` in a fresh process with OpenMP ``setting``: default (nothing set),
    PASSIVE (OMP_WAIT_POLICY=PASSIVE) or VARIABLE=VALUE (e.g. GOMP_SPINCOUNT=10000)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if setting == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif setting != "default":
        name, value = setting.split("=", 1)
        env[name] = value
    rival = (subprocess.Popen([sys.executable, __file__, "--competitor", str(seconds + 30)], env=env)
             if competing else None)
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", workload, str(seconds)], env=env,
                             check=True, capture_output=True, text=True).stdout
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2], float(sys.argv[3]))
    if sys.argv[1:2] == ["--competitor"]:
        return competitor(float(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settings", nargs="+", default=["default", "PASSIVE"],
                        help="default, PASSIVE, or VARIABLE=VALUE (e.g. GOMP_SPINCOUNT=10000); the first is the reference")
    args = parser.parse_args()
    for workload in WORKLOADS:
        for competing in (False, True):
            rates = {name: [] for name in args.settings}
            for _ in range(args.rounds):
                for name in rates:
                    rates[name].append(measure(workload, name, competing, args.seconds))
            medians = {name: statistics.median(r) for name, r in rates.items()}
            reference = medians[args.settings[0]]
            print(f"{workload}, {'with' if competing else 'without'} a competing process, steps/s: " +
                  ", ".join(f"{name} {m:.2f} ({m / reference:.2f}x)" for name, m in medians.items()), flush=True)


if __name__ == "__main__":
    main()
