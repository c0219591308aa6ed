"""The Python API: use a trained learner, or run what the CLI runs, from a notebook.

    learner = metarun.load("outputs/.../checkpoints/last.pt")
    learner.adapt(["cat1.jpg", "dog1.jpg"], ["cat", "dog"])    # the support set
    probabilities = learner.predict(["a.jpg", "b.jpg"])        # [2, 2], columns: learner.classes

    results = metarun.run(["algo=protonet", "data=omniglot", "trainer.max_steps=100"])

Images may be file paths, PIL images, numpy arrays (H x W grey, H x W x C) or tensors (C x H x W),
in any size: each goes through the checkpoint's own preprocessing (``Preprocessing``), the one its
training images went through. ``adapt`` keeps the support set; ``predict`` adapts on it the way the
learner does at test time (prototypes, inner steps, memory, fine-tuning) and scores the queries in
chunks of the test episodes' query count (``data.ways x data.queries``), the condition the learner
was tested in (it matters for learners whose batch norm uses the batch's statistics).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from metarun.algorithms import build_learner
from metarun.config_check import ways_fixed_by_training
from metarun.data.preprocess import INK_DATASETS, Preprocessing
from metarun.engine.checkpoint import load_checkpoint
from metarun.errors import DataError, MetarunError
from metarun.tasks import Task

log = logging.getLogger("metarun")


def image_of(item) -> Image.Image:
    """A PIL image from a PIL image, numpy array (H x W, H x W x C; uint8, or floats in [0, 1]) or
    tensor (C x H x W or H x W). (Files are read by ``Preprocessing.read``.)"""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, torch.Tensor):
        array = item.detach().cpu().numpy()
        item = array.transpose(1, 2, 0) if array.ndim == 3 else array
    if isinstance(item, np.ndarray):
        array = item
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise DataError(f"an image array of shape {item.shape}: expected H x W, H x W x 3 or 4 (numpy) "
                            "or C x H x W (tensor)")
        if array.dtype != np.uint8:
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise DataError(f"an image array of {array.dtype} with values outside [0, 1]: give uint8 "
                                "(0-255) or floats in [0, 1]")
            array = np.round(array * 255).astype(np.uint8)
        return Image.fromarray(array)
    raise DataError(f"an image of type {type(item).__name__}: give a file path, a PIL image, a numpy "
                    "array or a tensor")


def as_list(images) -> list:
    """One image per element: a 4-D array or tensor is a batch."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
        return [images]
    return list(images)


def preprocessing_from(state: dict, path: Path) -> Preprocessing:
    """The checkpoint's preprocessing; for a checkpoint of an older metarun without it, the one its
    config implies where that is certain (Omniglot: grey ink, no normalisation)."""
    spec = state.get("learner")
    if spec is not None and "preprocessing" in spec:
        return Preprocessing.from_dict(spec["preprocessing"])
    data = state["config"]["data"]
    if data["name"] in INK_DATASETS and not data.get("normalize"):
        return Preprocessing(data["image_size"], 1, invert=True)
    raise MetarunError(f"{path} was written by an older metarun that did not store how its images were "
                       "preprocessed; train it again (or continue it one step) with this version")


class TrainedLearner:
    """A meta-trained learner, ready to adapt to a support set of new classes and predict.
    ``classes``: the support set's classes, in the order of ``predict``'s columns."""

    def __init__(self, learner, config: dict, preprocessing: Preprocessing, device: torch.device,
                 checkpoint: Path):
        self.learner, self.config, self.preprocessing = learner.eval(), config, preprocessing
        self.device, self.checkpoint = device, checkpoint
        data = config["data"]
        self.chunk = data["ways"] * data["queries"]
        self.classes: list = []
        self._support: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def algo(self) -> str:
        return self.config["algo"]["name"]

    def pixels(self, images, what: str) -> torch.Tensor:
        items = as_list(images)
        if not items:
            raise DataError(f"no {what} images given")
        prep = self.preprocessing
        return prep.tensor(np.stack([prep.read(Path(i)) if isinstance(i, (str, Path)) else prep.pixels(image_of(i))
                                     for i in items]))

    def check_support(self, counts: dict) -> None:
        """The support shapes the learner can read: learners with one output per way need the
        ways they were trained with; SNAIL reads a sequence of exactly ways x shots examples."""
        data, name = self.config["data"], self.algo
        if ways_fixed_by_training(OmegaConf.create(self.config)) and len(counts) != data["ways"]:
            raise DataError(f"the support set has {len(counts)} classes; algo={name} has one output per way "
                            f"and was trained with data.ways={data['ways']}: give exactly {data['ways']} "
                            "classes (metric learners such as protonet take any number)")
        if name == "snail" and any(c != data["shots"] for c in counts.values()):
            odd = next(k for k, c in counts.items() if c != data["shots"])
            raise DataError(f"class {odd} has {counts[odd]} support images; algo=snail reads a sequence of "
                            f"ways x shots examples and was trained with data.shots={data['shots']}: give "
                            f"{data['shots']} per class")

    def adapt(self, images, labels: Sequence) -> "TrainedLearner":
        """Keep the support set: ``images`` with their ``labels`` (any hashable class names)."""
        items, labels = as_list(images), list(labels)
        if len(items) != len(labels):
            raise DataError(f"{len(items)} support images but {len(labels)} labels")
        try:
            classes = sorted(set(labels))
        except TypeError:
            classes = list(dict.fromkeys(labels))
        self.check_support({c: labels.count(c) for c in classes})
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[label] for label in labels])
        order = torch.argsort(y, stable=True)  # class-major, as in training episodes
        self.classes = classes
        self._support = (self.pixels(items, "support")[order].to(self.device), y[order].to(self.device))
        return self

    def predict(self, images) -> torch.Tensor:
        """Class probabilities [n, len(classes)] of ``images`` (rows sum to 1)."""
        if self._support is None:
            raise MetarunError("adapt(images, labels) on a support set first")
        support_x, support_y = self._support
        queries = self.pixels(images, "query")
        rows = []
        with torch.no_grad():
            for chunk in queries.split(self.chunk):
                chunk = chunk.to(self.device)
                task = Task(support_x, support_y, chunk,
                            torch.zeros(len(chunk), dtype=torch.long, device=self.device))
                rows.append(self.learner.class_probabilities(self.learner.adapt_and_predict(task)).cpu())
        return torch.cat(rows)


def checkpoint_in(path: Path) -> Path:
    """A checkpoint file, or the one a run dir tested (results.json), else its best.pt, else last.pt."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise MetarunError(f"{path}: no such checkpoint or run dir")
    results = path / "results.json"
    if results.is_file():
        tested = Path(json.loads(results.read_text())["checkpoint"])
        for candidate in (tested, path / "checkpoints" / tested.name):
            if candidate.is_file():
                return candidate
    for name in ("best.pt", "last.pt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise MetarunError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt")


def load(path, device: str = "cpu", trust_checkpoint: bool = False) -> TrainedLearner:
    """The learner of a checkpoint (or of a run dir), read with ``weights_only=True``; no Hydra
    run dir or data set is needed."""
    checkpoint = checkpoint_in(Path(path))
    state = load_checkpoint(checkpoint, trust_checkpoint)
    config = state["config"]
    cfg = OmegaConf.create(config)
    if cfg.data.kind != "image":
        raise MetarunError(f"{checkpoint} was trained on data={cfg.data.name} ({cfg.data.kind}); "
                           "predicting from images needs an image learner")
    preprocessing = preprocessing_from(state, checkpoint)
    spec = state.get("learner") or {}
    shape = tuple(spec.get("input_shape", (preprocessing.channels, preprocessing.image_size,
                                           preprocessing.image_size)))
    if cfg.algo.name in ("baseline", "baselinepp") and "n_train_classes" not in spec:
        raise MetarunError(f"{checkpoint} was written by an older metarun that did not store its "
                           "pre-training classes; train it again with this version")
    learner = build_learner(cfg, "image", shape, spec.get("n_train_classes"))
    learner.load_state_dict(state["model"])
    device = torch.device(device)
    return TrainedLearner(learner.to(device), config, preprocessing, device, checkpoint)


def run(overrides: Iterable[str] = (), run_dir=None) -> dict | None:
    """What ``metarun <overrides>`` runs (one run; sweeps are the CLI's ``-m``), composed with
    Hydra's compose API; returns the results (results.json's content). ``run_dir``: where it
    writes (default: ``paths.output_dir/api/<time>_<algo>_<data>``)."""
    from hydra import compose, initialize_config_module

    from metarun import cli
    from metarun.config_check import check_added_keys

    overrides = list(overrides)
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
        check_added_keys(overrides, lambda kept: compose(config_name="config", overrides=kept))
    if run_dir is None:
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        run_dir = Path(cfg.paths.output_dir) / "api" / f"{stamp}_{cfg.algo.name}_{cfg.data.name}"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return cli.run(cfg, run_dir)
