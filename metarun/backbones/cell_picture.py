"""A picture of a genotype's normal and reduction cells (matplotlib)."""
from __future__ import annotations

from pathlib import Path


def node_positions(nodes: int) -> dict[int, tuple[float, float]]:
    """Inputs c_{k-2}, c_{k-1} on the left, the intermediate nodes on a diagonal, the output right."""
    positions = {0: (0.0, 1.0), 1: (0.0, 0.0)}
    for node in range(nodes):
        positions[2 + node] = (1.0 + node, 0.5 + (node % 2 - 0.5) * 0.6)
    positions[-1] = (1.0 + nodes, 0.5)
    return positions


def draw_cell(axes, gene: list[list[list]], title: str) -> None:
    nodes = len(gene)
    positions = node_positions(nodes)
    names = {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_k", **{2 + n: str(n) for n in range(nodes)}}
    for node, pairs in enumerate(gene):
        for operation, source in pairs:
            start, end = positions[int(source)], positions[2 + node]
            axes.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="0.3",
                                                                     shrinkA=14, shrinkB=14))
            axes.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, operation, fontsize=7,
                      ha="center", va="center", bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.8))
    for node in range(nodes):
        axes.annotate("", xy=positions[-1], xytext=positions[2 + node],
                      arrowprops=dict(arrowstyle="->", color="0.75", shrinkA=14, shrinkB=14, linestyle="--"))
    for key, (x, y) in positions.items():
        colour = "#cfe2f3" if key in (0, 1) else "#d9ead3" if key == -1 else "#fff2cc"
        axes.text(x, y, f"${names[key]}$" if "_" in names[key] else names[key], ha="center", va="center",
                  fontsize=9, bbox=dict(boxstyle="circle", fc=colour, ec="0.4"))
    axes.set_title(title)
    axes.set_xlim(-0.5, nodes + 1.5)
    axes.set_ylim(-0.4, 1.4)
    axes.axis("off")


def draw_cells(genotype: dict, path: Path) -> None:
    """Save the normal and the reduction cell of ``genotype`` side by side as ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (normal, reduce) = plt.subplots(1, 2, figsize=(11, 3.6))
    draw_cell(normal, genotype["normal"], "normal cell")
    draw_cell(reduce, genotype["reduce"], "reduction cell")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
