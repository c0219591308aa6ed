"""The ``metarun`` command chooses how OpenMP's threads wait before torch loads."""
from __future__ import annotations

import subprocess
import sys

import pytest

from metarun.engine import openmp_wait
from metarun.engine.openmp_wait import SHARED_SPINCOUNT, choose_openmp_wait, cpu_times, wait_setting


def test_spinning_is_bounded_only_when_others_keep_the_cores_busy_and_the_user_has_not_chosen():
    assert wait_setting({}, busy=1.4)[0] == SHARED_SPINCOUNT
    assert wait_setting({}, busy=0.1) == (None, "OpenMP's default: the cores were idle when metarun started (0.1 busy)")
    assert wait_setting({}, busy=None)[0] is None
    value, why = wait_setting({"OMP_WAIT_POLICY": "PASSIVE"}, busy=1.9)
    assert value is None and why == "OMP_WAIT_POLICY=PASSIVE from the environment"


def test_the_choice_goes_into_the_environment_that_openmp_reads(monkeypatch):
    environ = {"PATH": "/bin"}
    monkeypatch.setattr(openmp_wait, "busy_cores", lambda: 1.2)
    choose_openmp_wait(environ)
    assert environ["GOMP_SPINCOUNT"] == SHARED_SPINCOUNT and "1.2 of" in openmp_wait.chosen["why"]
    own = {"GOMP_SPINCOUNT": "50000"}
    monkeypatch.setattr(openmp_wait, "busy_cores", lambda: pytest.fail("probed although the user chose"))
    choose_openmp_wait(own)
    assert own == {"GOMP_SPINCOUNT": "50000"}


def test_proc_stat_gives_busy_and_total_time():
    stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n"
    assert cpu_times(stat) == (100 + 5 + 50 + 3 + 2, 1000)


def test_the_command_decides_before_anything_has_imported_torch():
    code = "import sys, metarun.command, metarun.engine.openmp_wait; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
