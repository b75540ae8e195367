"""Pictures of a search's outcome: the Pareto front (top-1 vs MACs) and the found architecture.

Each space draws its own architectures (`Space.draw`): a chain of blocks for MBConv, a cell
graph for NAS-Bench-201; this module frames and titles them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")                      # files only, no display needed
import matplotlib.pyplot as plt            # noqa: E402
import numpy as np                         # noqa: E402

from fastnas.spaces.mbconv import MBConvSpace      # noqa: E402

def pareto_front(macs: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both (fewer MACs, higher top-1), by MACs."""
    order = np.lexsort((-top1, macs))
    front, best = [], -np.inf
    for i in order:
        if top1[i] > best:
            front.append(i)
            best = top1[i]
    return np.array(front, dtype=np.int64)


def plot_pareto(macs: Sequence[float], top1: Sequence[float], path: str | Path,
                best: int | None = None, title: str = "Evaluated candidates") -> None:
    macs = np.asarray(macs, dtype=np.float64)
    top1 = np.asarray(top1, dtype=np.float64)
    front = pareto_front(macs, top1)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(macs / 1e6, top1, s=10, c="#adb5bd", label="candidates")
    ax.step(macs[front] / 1e6, top1[front], where="post", c="#d62828", lw=1.5)
    ax.scatter(macs[front] / 1e6, top1[front], s=18, c="#d62828", label="Pareto front")
    if best is not None:
        ax.scatter([macs[best] / 1e6], [top1[best]], s=90, marker="*", c="#003049", label="best", zorder=3)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_architecture(space: Space, arch: Sequence[int], path: str | Path, title: str = "") -> None:
    """The space's own picture of `arch` (a chain of blocks, a cell graph, ...), titled with its cost."""
    arch = space.validate(arch)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    space.draw(ax, arch)
    cost = space.cost(arch)
    ax.set_title(title or f"{cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.2f}M params, {space.cfg.resolution}px",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
