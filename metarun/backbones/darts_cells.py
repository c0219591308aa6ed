"""DARTS cells (Liu, Simonyan & Yang 2019) with MetaNAS's few-shot operations (Elsken et al. 2020).

A network is a stem convolution, ``layers`` cells (channels doubled and maps halved at the
``reduction_layers``), global average pooling. A cell reads the outputs of the two cells before
it, computes ``nodes`` intermediate nodes, each the sum of edges from every earlier state, and
outputs the nodes' concatenation. In the search network every edge is a mixed operation: the sum
of all ``PRIMITIVES`` weighted by the softmax of the architecture parameters (``alpha_normal``,
``alpha_reduce``: edges x operations, shared by every normal / every reduction cell) over a
temperature. A genotype keeps, for each node, the two input edges whose best operation weighs
most, each with that operation alone: ``CellNetwork(genotype=...)`` is that fixed network, a
backbone like any other (``backbone=genotype``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# MetaNAS's operations for few-shot learning (the authors' code, PRIMITIVES_FEWSHOT)
PRIMITIVES = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1", "conv_3x3", "sep_conv_3x3",
              "dil_conv_3x3")
INPUTS_PER_NODE = 2  # a genotype's node keeps its two strongest input edges (DARTS)


def relu_conv_bn(c_in: int, c_out: int, kernel, stride, padding, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(c_out)]


def dilated_separable(c: int, stride: int, padding: int, dilation: int) -> list[nn.Module]:
    """ReLU, depthwise 3x3 (dilated), pointwise 1x1, batch norm."""
    return [nn.ReLU(), nn.Conv2d(c, c, 3, stride, padding, dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]


class FactorizedReduce(nn.Module):
    """Halve the maps with two 1x1 stride-2 convolutions, one shifted by a pixel, concatenated
    (DARTS). The shifted path is padded, so odd sizes (Omniglot's 7x7) halve like a 3x3 stride-2
    convolution does: ceil(n / 2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.even = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.odd = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.norm(torch.cat([self.even(x), self.odd(shifted)], dim=1))


def operation(name: str, c: int, stride: int) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "conv_1x5_5x1":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, (1, 5), (1, stride), (0, 2), bias=False),
                             nn.Conv2d(c, c, (5, 1), (stride, 1), (2, 0), bias=False), nn.BatchNorm2d(c))
    if name == "conv_3x3":
        return nn.Sequential(*relu_conv_bn(c, c, 3, stride, 1))
    if name == "sep_conv_3x3":  # DARTS: two separable blocks, the first strided
        return nn.Sequential(*dilated_separable(c, stride, 1, 1), *dilated_separable(c, 1, 1, 1))
    if name == "dil_conv_3x3":
        return nn.Sequential(*dilated_separable(c, stride, 2, 2))
    raise ValueError(f"unknown operation {name!r}: one of {', '.join(PRIMITIVES)}")


class Edge(nn.Module):
    """The operations of one edge: weighted and summed (search), or the one a genotype chose."""

    def __init__(self, names: tuple[str, ...], c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(operation(name, c, stride) for name in names)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return self.ops[0](x)
        return sum(w * op(x) for w, op in zip(weights, self.ops))


def all_edges(nodes: int) -> list[tuple[int, int]]:
    """(node, input) of every edge of a search cell, in the rows' order of the alphas: node i
    reads the cell's two inputs and nodes 0..i-1 (inputs numbered 0, 1 and 2 + node)."""
    return [(node, source) for node in range(nodes) for source in range(2 + node)]


class Cell(nn.Module):
    def __init__(self, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 edges: dict[tuple[int, int], tuple[str, ...]]):
        super().__init__()
        self.nodes, self.reduction = nodes, reduction
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else nn.Sequential(*relu_conv_bn(c_pp, c, 1, 1, 0))
        self.pre1 = nn.Sequential(*relu_conv_bn(c_p, c, 1, 1, 0))
        self.edge_keys = list(edges)
        self.edges = nn.ModuleDict({f"{node}_{source}": Edge(names, c, 2 if reduction and source < 2 else 1)
                                    for (node, source), names in edges.items()})

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: dict[tuple[int, int], torch.Tensor] | None):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(self.nodes):
            states.append(sum(self.edges[f"{n}_{source}"](states[source], None if weights is None else weights[(n, source)])
                              for n, source in self.edge_keys if n == node))
        return torch.cat(states[2:], dim=1)


class CellNetwork(nn.Module):
    """The search network (``genotype=None``: mixed edges, architecture parameters, a softmax
    ``temperature`` and optional ``masks`` of pruned operations) or a genotype's fixed network.
    ``channels_last``: weights and maps in NHWC memory layout (same function; a forward and
    backward pass of the 4-channel search network 1.16x faster on 2 threads, 1.44x on 1:
    scripts/bench_metanas.py)."""

    def __init__(self, in_channels: int, channels: int, layers: int, reduction_layers, nodes: int,
                 stem_multiplier: int, primitives=PRIMITIVES, genotype: dict | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.nodes, self.primitives, self.genotype = nodes, tuple(primitives), genotype
        self.channels_last = channels_last
        c = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        c_pp, c_p, c = c, c, channels
        self.cells, reduction_prev = nn.ModuleList(), False
        for layer in range(layers):
            reduction = layer in set(reduction_layers)
            if reduction:
                c *= 2
            edges = ({edge: self.primitives for edge in all_edges(nodes)} if genotype is None
                     else genotype_edges(genotype["reduce" if reduction else "normal"]))
            self.cells.append(Cell(nodes, c_pp, c_p, c, reduction, reduction_prev, edges))
            c_pp, c_p, reduction_prev = c_p, c * nodes, reduction
        self.out_features = c_p
        if genotype is None:
            shape = (len(all_edges(nodes)), len(self.primitives))
            self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))  # the authors' initialisation
            self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))
            self.temperature = 1.0
            self.masks: dict[str, torch.Tensor] | None = None
        if channels_last:  # NHWC: the same function, the many small convolutions faster on a CPU
            self.to(memory_format=torch.channels_last)

    def operation_weights(self, alpha: torch.Tensor, cell: str) -> torch.Tensor:
        """softmax(alpha / temperature) over each edge's operations; pruned ones (``masks``) get 0."""
        if self.masks is not None:
            alpha = alpha.masked_fill(self.masks[cell], float("-inf"))
        return torch.softmax(alpha / self.temperature, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {}
        if self.genotype is None:
            for cell, alpha in (("normal", self.alpha_normal), ("reduce", self.alpha_reduce)):
                weights[cell] = dict(zip(all_edges(self.nodes), self.operation_weights(alpha, cell)))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights.get("reduce" if cell.reduction else "normal"))
        return F.adaptive_avg_pool2d(s1, 1).flatten(1)


def parse_genotype(weights: torch.Tensor, nodes: int, primitives) -> list[list[list]]:
    """For each node, its ``INPUTS_PER_NODE`` input edges whose best operation weighs most, each as
    [operation, input] (``weights``: edges x operations, rows in ``all_edges`` order)."""
    best, chosen = weights.max(dim=1)
    rows = {edge: i for i, edge in enumerate(all_edges(nodes))}
    gene = []
    for node in range(nodes):
        sources = sorted(range(2 + node), key=lambda s: -float(best[rows[(node, s)]]))[:INPUTS_PER_NODE]
        gene.append([[primitives[int(chosen[rows[(node, s)]])], s] for s in sorted(sources)])
    return gene


def random_genotype(nodes: int, seed: int, primitives=PRIMITIVES) -> dict:
    """A cell pair drawn uniformly from the search space: for each node two distinct inputs, each
    with an operation drawn uniformly (the control a searched genotype must beat)."""
    generator = torch.Generator().manual_seed(seed)

    def cell() -> list[list[list]]:
        gene = []
        for node in range(nodes):
            sources = sorted(torch.randperm(2 + node, generator=generator)[:INPUTS_PER_NODE].tolist())
            gene.append([[primitives[int(torch.randint(len(primitives), (1,), generator=generator))], s]
                         for s in sources])
        return gene

    return {"nodes": nodes, "primitives": list(primitives), "normal": cell(), "reduce": cell(), "random_seed": seed}


def genotype_edges(gene: list[list[list]]) -> dict[tuple[int, int], tuple[str, ...]]:
    return {(node, int(source)): (name,) for node, pairs in enumerate(gene) for name, source in pairs}


def read_genotype(path: str | Path) -> dict:
    """A genotype file that a MetaNAS run wrote (checkpoints/genotype.json)."""
    genotype = json.loads(Path(path).expanduser().read_text())
    for key in ("normal", "reduce"):
        for pairs in genotype[key]:
            for name, _ in pairs:
                if name not in PRIMITIVES:
                    raise ValueError(f"{path}: unknown operation {name!r} (one of {', '.join(PRIMITIVES)})")
    return genotype
