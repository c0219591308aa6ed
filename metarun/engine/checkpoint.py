"""Checkpoints: atomic writes, safe loading, and everything needed to resume to the identical result.

A checkpoint holds tensors and plain Python values only (the NumPy RNG state too, as a list), so
``torch.load(weights_only=True)`` reads it: loading a checkpoint someone sent you cannot run code.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from metarun.errors import MetarunError

log = logging.getLogger("metarun")


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename: a crash at
    any moment leaves either the previous file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # no two writers share one
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, trusted: bool = False) -> dict:
    """The checkpoint at ``path``, read with ``weights_only=True`` (tensors and plain values only).
    ``trusted`` (``trainer.trust_checkpoint=true``) reads any pickle instead: for checkpoints of
    older metarun versions, whose NumPy RNG state is a pickled array, from a source you trust."""
    if trusted:
        log.warning(f"trainer.trust_checkpoint=true: loading {path} with weights_only=False, which "
                    "runs any code the file holds; only do this for files you trust")
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0]
        raise MetarunError(f"{path} cannot be loaded safely ({reason}): it holds Python objects besides "
                           "tensors, so it was written by an older metarun or by another program. If you "
                           "trust its source: trainer.trust_checkpoint=true (loading it may run code)") from e


def rng_states(generator: torch.Generator) -> dict:
    """Every random stream a run draws from, as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": numpy_state,
            "torch": torch.get_rng_state(), "episodes": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng_states(states: dict, generator: torch.Generator) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    if isinstance(numpy_state, dict):  # key: a list; a pickled array in older checkpoints
        numpy_state = {**numpy_state, "state": {**numpy_state["state"],
                                                "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}}
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    generator.set_state(states["episodes"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
