"""Data sets that their publishers distribute as Python pickles (mini-ImageNet's cache files,
tiered-ImageNet, CIFAR-100). Unpickling runs whatever code a file holds, so each read says so;
it happens once per file, when metarun decodes it into its cache (a plain .npz)."""
from __future__ import annotations

import logging
import pickle
from typing import BinaryIO

log = logging.getLogger("metarun")


def load_published_pickle(handle: BinaryIO, source: str, **options):
    """``pickle.load(handle, **options)``, with a warning naming ``source`` and what is trusted."""
    log.warning(f"reading {source} with Python's pickle, which runs any code the file holds: use only "
                "copies from its publishers or from people you trust (metarun's decoded cache of it "
                "is a plain .npz)")
    return pickle.load(handle, **options)
