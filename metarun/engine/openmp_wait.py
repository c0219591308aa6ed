"""How torch's OpenMP threads wait, chosen before torch loads (GNU OpenMP reads it only then).

Between two parallel regions, GNU OpenMP's threads spin for a while before they sleep (torch's
Linux wheels use it). On cores of one's own that is the fastest; when other processes use the
cores, the spinning threads take turns from the threads that have work: a 2-thread run was 3-6x
slower beside one busy process, and bounded spinning made it 1.8-2.4x faster there while costing
up to 14% on idle cores (docs/performance.md). So when the ``metarun`` command
starts while others already keep its cores busy, it bounds the spinning (``GOMP_SPINCOUNT``); on
an idle machine it keeps OpenMP's default. A setting of the user's own (``GOMP_SPINCOUNT``,
``OMP_WAIT_POLICY``) always wins. Only Linux says how busy the cores are (/proc/stat).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

USER_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
SHARED_SPINCOUNT = "1000"  # spins before a waiting thread sleeps (GNU OpenMP's default: 300,000)
BUSY_CORES = 0.5  # cores kept busy by others at start from which metarun counts the machine as shared
PROBE_S = 0.25

# why the wait is what it is, for the run's log (set by ``choose_openmp_wait``)
chosen: dict[str, str] = {}


def cpu_times(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line."""
    fields = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user..steal; guest time is already counted in user
    return total - idle, total


def busy_cores(probe_s: float = PROBE_S) -> float | None:
    """Cores kept busy by other processes (this one sleeps meanwhile), None where unknown."""
    stat = Path("/proc/stat")
    try:
        busy_before, total_before = cpu_times(stat.read_text())
        time.sleep(probe_s)
        busy_after, total_after = cpu_times(stat.read_text())
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    return (busy_after - busy_before) / elapsed * (os.cpu_count() or 1) if elapsed > 0 else None


def wait_setting(environ: dict[str, str], busy: float | None) -> tuple[str | None, str]:
    """The ``GOMP_SPINCOUNT`` to set (None: leave the environment as it is) and why."""
    own = [f"{name}={environ[name]}" for name in USER_SETTINGS if name in environ]
    if own:
        return None, f"{', '.join(own)} from the environment"
    if busy is None:
        return None, "OpenMP's default (how busy the cores are is unknown here)"
    if busy >= BUSY_CORES:
        return SHARED_SPINCOUNT, (f"GOMP_SPINCOUNT={SHARED_SPINCOUNT}: other processes kept {busy:.1f} of "
                                  f"{os.cpu_count()} cores busy when metarun started (set GOMP_SPINCOUNT or "
                                  "OMP_WAIT_POLICY yourself to choose)")
    return None, f"OpenMP's default: the cores were idle when metarun started ({busy:.1f} busy)"


def choose_openmp_wait(environ=os.environ) -> None:
    """Set the wait policy in ``environ``; must run before torch is imported."""
    user_set = any(name in environ for name in USER_SETTINGS)
    value, why = wait_setting(dict(environ), None if user_set else busy_cores())
    if value is not None:
        environ["GOMP_SPINCOUNT"] = value
    chosen["why"] = why


def openmp_environment() -> dict[str, str]:
    """The wait settings this process runs with, for results.json."""
    return {name: os.environ[name] for name in USER_SETTINGS if name in os.environ}
