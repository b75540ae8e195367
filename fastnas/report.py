"""Pictures of a search's outcome: the Pareto front (top-1 vs MACs) and the found architecture.

The architecture is drawn the way NAS papers draw their found networks (ProxylessNAS, FBNet):
one box per block, left to right; the box's colour is its kernel size and its height its
expansion ratio; skipped layers are thin grey bars; stage boundaries carry channels and stride.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")                      # files only, no display needed
import matplotlib.pyplot as plt            # noqa: E402
import numpy as np                         # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from fastnas.space import SearchSpace      # noqa: E402

KERNEL_COLOURS = {3: "#8ecae6", 5: "#ffb703", 7: "#fb8500"}


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


def draw_architecture(space: SearchSpace, arch: Sequence[int], path: str | Path, title: str = "") -> None:
    arch = space.validate(arch)
    cfg = space.cfg
    blocks = [("stem", 3, None), ("MB1 k3", 3, 1)]
    blocks += [(space.layers[i].choices[c], *(space.block(i, c) or (None, None))) for i, c in enumerate(arch)]
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(blocks) + 2), 3.2), dpi=120)
    x = 0.0
    for name, k, e in blocks:
        if k is None:                                    # skipped layer
            ax.add_patch(FancyBboxPatch((x + 0.2, 0.45), 0.1, 0.1, boxstyle="round,pad=0.02", fc="#dee2e6", ec="none"))
            x += 0.5
            continue
        h = 0.35 if e is None else 0.25 + 0.1 * e
        ax.add_patch(FancyBboxPatch((x, 0.5 - h / 2), 0.4, h, boxstyle="round,pad=0.03",
                                    fc=KERNEL_COLOURS.get(k, "#90be6d"), ec="#343a40", lw=0.6))
        ax.text(x + 0.2, 0.5, name.replace("skip", ""), rotation=90, ha="center", va="center", fontsize=7)
        x += 0.6
    # stage labels
    x = 1.2
    for i, c in enumerate(arch):
        layer = space.layers[i]
        if i == 0 or layer.in_channels != layer.out_channels or layer.stride != 1:
            ax.axvline(x - 0.1, color="#adb5bd", lw=0.6, ls=":")
            ax.text(x, 1.05, f"{layer.out_channels}ch s{layer.stride}\n{layer.out_size}px", fontsize=6, va="bottom")
        x += 0.6 if space.block(i, c) is not None else 0.5
    ax.add_patch(FancyBboxPatch((x, 0.3), 0.5, 0.4, boxstyle="round,pad=0.03", fc="#e9ecef", ec="#343a40", lw=0.6))
    ax.text(x + 0.25, 0.5, f"{cfg.head_channels}\npool\nfc", ha="center", va="center", fontsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=col) for col in KERNEL_COLOURS.values()]
    ax.legend(handles, [f"k{k}" for k in KERNEL_COLOURS], loc="lower left", fontsize=7, ncol=3, frameon=False)
    ax.text(x + 0.6, 0.05, "height = expansion", fontsize=6, ha="right")
    ax.set_xlim(-0.3, x + 0.8)
    ax.set_ylim(-0.1, 1.4)
    ax.axis("off")
    cost = space.cost(arch)
    ax.set_title(title or f"{cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.2f}M params, {cfg.resolution}px", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
