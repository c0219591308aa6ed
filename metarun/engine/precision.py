"""Mixed precision of the meta-training forward passes (``trainer.precision``).

bf16 autocast pays only where the hardware computes bf16: Conv4 trains about 1.6x faster with it
on CPUs with AVX-512 BF16, but about 8x slower on a CPU without (torch emulates it: ProtoNet's
60-way episodes at 0.86 instead of 6.8 a second on a 2-core AVX2 EPYC), and no faster on an
H200 (126 against 138 episodes a second). ``auto`` therefore takes bf16 only on such CPUs.
Weights, optimiser state and evaluation stay fp32 in every case.

A learner whose inner loop takes steps below bf16's resolution of its weights says so
(``MetaLearner.bf16_breaks``), and ``auto`` keeps it in fp32: Reptile's inner Adam moves each
weight by about 1e-3 a step, while bf16 rounds a weight of 0.25 to multiples of 2^-9 (0.002), so
under autocast its inner loop hardly changes what the network computes (800 updates: train loss
1.60 in bf16, 0.15 in fp32).
"""
from __future__ import annotations

import torch

from metarun.errors import ConfigError


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX-BF16). Older torch versions
    do not list CPU features (no ``torch.cpu.get_capabilities``): no, then, as fp32 is never the
    slow choice."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolve_precision(precision: str, device: torch.device, bf16_breaks: str | None = None) -> str:
    """fp32 or bf16: ``auto`` becomes bf16 on a CPU that computes it, fp32 elsewhere and for a
    learner that bf16 breaks (``bf16_breaks``: why, or None)."""
    if precision == "auto":
        return "bf16" if device.type == "cpu" and cpu_computes_bf16() and not bf16_breaks else "fp32"
    if precision in ("fp32", "bf16"):
        return precision
    raise ConfigError("trainer.precision", precision, "one of fp32, bf16, auto")


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a meta-training step in ``precision`` (resolved: fp32 or bf16)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
