"""Builds the episode sources (train / val / test) a run draws its tasks from."""
from __future__ import annotations

from metarun.data.augment import Augmentation
from metarun.data.episodes import EpisodeSource, FewShotImageSource
from metarun.data.preprocess import preprocessing_of
from metarun.data.sinusoid import SinusoidSource
from metarun.errors import ConfigError

DATASETS = ("omniglot", "miniimagenet", "tieredimagenet", "cifarfs", "fc100", "cub", "folder", "sinusoid",
            "bandits", "navigation2d", "gym")
RL_KINDS = ("bandit", "navigation", "gym")


def build_sources(data_cfg, paths_cfg, class_split: dict[str, list[str]] | None = None
                  ) -> dict[str, EpisodeSource | None]:
    """``{"train": ..., "val": ... or None, "test": ...}`` for the data set ``data_cfg.name``.
    ``class_split``: the classes of each split that a checkpoint was trained with (data=folder),
    reused instead of splitting the folder again."""
    sources = read_sources(data_cfg, paths_cfg, class_split)
    if data_cfg.kind == "image":
        prepare_images(sources, data_cfg)
    return sources


def prepare_images(sources: dict[str, FewShotImageSource | None], data_cfg) -> None:
    """``data.normalize``: every split normalised with the meta-training split's per-channel
    statistics; ``data.augment``: the meta-training split's episodes augmented."""
    train = sources["train"]
    if data_cfg.normalize:
        statistics = train.channel_statistics()
        for source in sources.values():
            if source is not None:
                source.normalisation = statistics
    augmentation = Augmentation(**data_cfg.augment)
    train.augmentation = augmentation if augmentation.active else None


def read_sources(data_cfg, paths_cfg, class_split=None) -> dict[str, EpisodeSource | None]:
    if data_cfg.name == "omniglot":
        from metarun.data.omniglot import build_omniglot
        return build_omniglot(data_cfg, paths_cfg)
    if data_cfg.name == "miniimagenet":
        from metarun.data.miniimagenet import build_miniimagenet
        return build_miniimagenet(data_cfg, paths_cfg)
    if data_cfg.name == "tieredimagenet":
        from metarun.data.tieredimagenet import build_tieredimagenet
        return build_tieredimagenet(data_cfg, paths_cfg)
    if data_cfg.name in ("cifarfs", "fc100"):
        from metarun.data.cifar100 import build_cifar100_split
        return build_cifar100_split(data_cfg, paths_cfg)
    if data_cfg.name == "cub":
        from metarun.data.cub import build_cub
        return build_cub(data_cfg, paths_cfg)
    if data_cfg.name == "folder":
        from metarun.data.image_folder import build_folder
        return build_folder(data_cfg, paths_cfg, class_split)
    if data_cfg.name == "sinusoid":
        return every_split(SinusoidSource(data_cfg.amplitude, data_cfg.phase, data_cfg.x_range))
    if data_cfg.name == "bandits":
        from metarun.data.bandits import BanditSource
        return every_split(BanditSource(data_cfg.arms, data_cfg.horizon))
    if data_cfg.name == "navigation2d":
        from metarun.data.navigation2d import NavigationSource
        return every_split(NavigationSource(data_cfg.goal_range, data_cfg.horizon, data_cfg.max_action,
                                            data_cfg.reward, data_cfg.goal_tolerance))
    if data_cfg.name == "gym":
        from metarun.data.gym_tasks import GymTaskSource
        return every_split(GymTaskSource(data_cfg.env_id, data_cfg.env_kwargs, data_cfg.horizon))
    raise ConfigError("data.name", data_cfg.name, f"one of {', '.join(DATASETS)}")


def every_split(source: EpisodeSource) -> dict[str, EpisodeSource]:
    """A generated task family serves every split; the fixed validation and test lists still
    differ, as their seeds include the split (``fixed_episodes``)."""
    return {"train": source, "val": source, "test": source}


def learner_spec(data_cfg, sources: dict[str, EpisodeSource | None]) -> dict:
    """What a checkpoint needs to rebuild its learner and read new inputs without the data set:
    the data kind, the input shape, the meta-training classes (the transfer baselines' classifier),
    for images the ``Preprocessing`` of files, and the classes of each split (folders)."""
    train = sources["train"]
    spec = {"kind": train.kind, "n_train_classes": train.n_classes}
    if isinstance(train, FewShotImageSource):
        spec["input_shape"] = list(train.image_shape)
        spec["preprocessing"] = preprocessing_of(data_cfg, train.image_shape).with_normalisation(
            train.normalisation).as_dict()
        spec["class_split"] = {name: list(s.class_names) for name, s in sources.items()
                               if s is not None and s.class_names is not None}
    return spec


def train_shape(cfg) -> tuple[int, ...]:
    """The shape (ways, shots, queries) of meta-training episodes; none for meta-RL tasks."""
    if cfg.data.kind in RL_KINDS:
        return ()
    episode = cfg.algo.episode
    return episode.ways, episode.shots, episode.queries


def eval_shape(cfg) -> tuple[int, ...]:
    """The shape of validation and test episodes; none for meta-RL tasks."""
    if cfg.data.kind in RL_KINDS:
        return ()
    return cfg.data.ways, cfg.data.shots, cfg.data.queries


__all__ = ["build_sources", "learner_spec", "train_shape", "eval_shape", "EpisodeSource", "FewShotImageSource",
           "SinusoidSource", "DATASETS", "RL_KINDS"]
