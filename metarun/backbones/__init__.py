"""Feature extractors. Each maps an input to a flat feature vector of ``out_features``."""
from __future__ import annotations

from torch import nn

from metarun.backbones.conv4 import Conv4
from metarun.backbones.darts_cells import CellNetwork, random_genotype, read_genotype
from metarun.backbones.gru import GRUCore
from metarun.backbones.mlp import MLP
from metarun.backbones.resnet12 import ResNet12
from metarun.backbones.wrn import WideResNet
from metarun.errors import ConfigError

# each backbone with the kinds of data it reads
BACKBONES = {"conv4": ("image",), "resnet12": ("image",), "wrn28": ("image",), "genotype": ("image",),
             "mlp": ("regression", "navigation", "gym"), "gru": ("bandit",)}


def build_backbone(cfg, input_shape: tuple[int, ...]) -> nn.Module:
    if cfg.name == "conv4":
        return Conv4(in_channels=input_shape[0], channels=cfg.channels, blocks=cfg.blocks,
                     pooled_blocks=cfg.pooled_blocks,
                     image_size=input_shape[-1], channels_last=cfg.channels_last,
                     fold_first_batch_norm=cfg.fold_first_batch_norm,
                     downsample=cfg.downsample, readout=cfg.readout)
    if cfg.name == "resnet12":
        return ResNet12(in_channels=input_shape[0], channels=list(cfg.channels), slope=cfg.leaky_slope,
                        global_pool=cfg.global_pool, image_size=input_shape[-1],
                        drop_rate=cfg.drop_block.rate, drop_block_size=cfg.drop_block.size,
                        drop_anneal_steps=cfg.drop_block.anneal_steps)
    if cfg.name == "wrn28":
        return WideResNet(in_channels=input_shape[0], depth=cfg.depth, widen=cfg.widen, dropout=cfg.dropout,
                          image_size=input_shape[-1])
    if cfg.name == "genotype":
        genotype = genotype_of(cfg)
        return CellNetwork(input_shape[0], cfg.channels, cfg.layers, list(cfg.reduction_layers),
                           len(genotype["normal"]), cfg.stem_multiplier, genotype=genotype,
                           channels_last=cfg.channels_last)
    if cfg.name == "mlp":
        return MLP(in_features=input_shape[0], hidden=list(cfg.hidden))
    if cfg.name == "gru":
        return GRUCore(in_features=input_shape[0], hidden=cfg.hidden)
    raise ConfigError("backbone.name", cfg.name, f"one of {', '.join(BACKBONES)}")


def genotype_of(cfg) -> dict:
    """backbone.genotype's file, read and checked, the cell pair drawn for ``random``, or a
    one-line error naming the key or file."""
    if not cfg.genotype:
        raise ConfigError("backbone.genotype", cfg.genotype, "the genotype.json a MetaNAS run wrote "
                          "(<run dir>/checkpoints/genotype.json), or random")
    if cfg.genotype == "random":  # its keys checked at start (config_check)
        return random_genotype(cfg.random_nodes, cfg.random_seed)
    try:
        return read_genotype(cfg.genotype)
    except FileNotFoundError:
        raise ConfigError("backbone.genotype", cfg.genotype, "an existing file: no such file") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError("backbone.genotype", cfg.genotype, f"a genotype.json of a MetaNAS run ({error})") from None
