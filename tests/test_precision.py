"""trainer.precision: auto takes bf16 only where the CPU computes it."""
from __future__ import annotations

import pytest
import torch

from metarun.engine.precision import resolve_precision
from metarun.errors import ConfigError


@pytest.mark.parametrize("capabilities, on_cpu", [
    ({"avx2": True, "avx512_bf16": True, "amx_bf16": False}, "bf16"),
    ({"avx2": True, "avx512_bf16": False, "amx_bf16": True}, "bf16"),
    ({"avx2": True, "avx512_bf16": False, "amx_bf16": False}, "fp32"),
    ({"asimd": True}, "fp32"),  # a CPU whose list has neither key
])
def test_auto_precision_is_bf16_only_on_cpus_with_bf16_instructions(monkeypatch, capabilities, on_cpu):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert resolve_precision("auto", torch.device("cpu")) == on_cpu
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # as asked, with a warning
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_auto_precision_keeps_a_learner_that_bf16_breaks_in_fp32(monkeypatch):
    from metarun.algorithms.reptile import Reptile
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert Reptile.bf16_breaks  # its inner steps of 1e-3 are below bf16's resolution of the weights
    assert resolve_precision("auto", torch.device("cpu"), Reptile.bf16_breaks) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu"), Reptile.bf16_breaks) == "bf16"  # as asked, warned


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError) as error:
        resolve_precision("fp16", torch.device("cpu"))
    assert error.value.key == "trainer.precision"


def test_auto_precision_is_fp32_where_torch_lists_no_cpu_features(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_autocast_for_casts_only_in_bf16():
    from metarun.engine.precision import autocast_for
    x = torch.rand(4, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with autocast_for(precision, torch.device("cpu")):
            assert (x @ x).dtype == dtype
