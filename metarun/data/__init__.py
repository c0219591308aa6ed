"""Builds the episode sources (train / val / test) a run draws its tasks from."""
from __future__ import annotations

from metarun.data.episodes import EpisodeSource, FewShotImageSource
from metarun.data.sinusoid import SinusoidSource
from metarun.errors import ConfigError

DATASETS = ("omniglot", "miniimagenet", "sinusoid")


def build_sources(data_cfg, paths_cfg) -> dict[str, EpisodeSource | None]:
    """``{"train": ..., "val": ... or None, "test": ...}`` for the data set ``data_cfg.name``."""
    if data_cfg.name == "omniglot":
        from metarun.data.omniglot import build_omniglot
        return build_omniglot(data_cfg, paths_cfg)
    if data_cfg.name == "miniimagenet":
        from metarun.data.miniimagenet import build_miniimagenet
        return build_miniimagenet(data_cfg, paths_cfg)
    if data_cfg.name == "sinusoid":
        source = SinusoidSource(data_cfg.amplitude, data_cfg.phase, data_cfg.x_range)
        return {"train": source, "val": source, "test": source}
    raise ConfigError("data.name", data_cfg.name, f"one of {', '.join(DATASETS)}")


__all__ = ["build_sources", "EpisodeSource", "FewShotImageSource", "SinusoidSource", "DATASETS"]
