"""Pictures of a search, for any space: progress, the Pareto front, the found architecture, truth.

  progress.png   best and mean fitness per generation, parent diversity on a twin axis
  pareto.png     fitness vs MACs of every candidate, the Pareto front marked
  best_arch.png  the found architecture, drawn by its space (`Space.draw`: a chain of blocks for
                 MBConv, a cell graph for NAS-Bench-201); this module frames and titles it
  truth.png      supernet fitness vs true stand-alone accuracy of every candidate (with a ground-truth
                 table), Kendall tau in the title

Files only (matplotlib's Agg backend), about 6x4 inches at 120 dpi.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")                      # files only, no display needed
import matplotlib.pyplot as plt            # noqa: E402
import numpy as np                         # noqa: E402

if TYPE_CHECKING:
    from fastnas.spaces import Space

FITNESS_LABELS = {"top1": "top-1 (%)", "neg_loss": "minus val loss"}


def fitness_label(kind: str) -> str:
    """Axis label of a fitness kind (`eval.fitness`)."""
    return FITNESS_LABELS.get(kind, kind)


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
                best: int | None = None, title: str = "Evaluated candidates", ylabel: str = "top-1 (%)") -> None:
    """Fitness (`top1`: any higher-is-better score) vs MACs of every candidate, the Pareto front marked."""
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
    ax.set_ylabel(ylabel)
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


def plot_progress(records: Sequence[dict], path: str | Path, ylabel: str = "top-1 (%)",
                  title: str = "") -> None:
    """Best and mean fitness per generation; parent diversity (twin axis) from generation 1 on.

    `records`: one dict per generation with generation, evaluations, best, mean, parent_diversity
    (the search's progress.json).
    """
    records = sorted(records, key=lambda r: r["generation"])
    gen = np.array([r["generation"] for r in records], dtype=np.int64)
    best = np.array([r["best"] for r in records], dtype=np.float64)
    mean = np.array([r["mean"] for r in records], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    lines = ax.plot(gen, best, "-o", c="#003049", ms=4, label="best so far")
    lines += ax.plot(gen, mean, "-s", c="#669bbc", ms=3, label="population mean")
    ax.set_xlabel("generation (0 = random initial population)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    later = gen > 0                                  # generation 0 has no parents
    twin = ax.twinx()
    if later.any():
        diversity = np.array([r["parent_diversity"] for r in records], dtype=np.float64)
        lines += twin.plot(gen[later], diversity[later], "--^", c="#d62828", ms=3, label="parent diversity")
    twin.set_ylabel("parent diversity (share of positions that differ)", fontsize=8, color="#d62828")
    twin.set_ylim(0, 1)
    twin.tick_params(axis="y", colors="#d62828", labelsize=8)
    if len(gen):
        ax.set_xticks(gen if len(gen) <= 15 else np.linspace(gen[0], gen[-1], 8).round().astype(int))
    evaluated = records[-1]["evaluations"] if records else 0
    span = f"generations {gen[0]}-{gen[-1]}" if len(gen) > 1 else f"generation {gen[0] if len(gen) else 0}"
    ax.set_title(title or f"search progress: {evaluated} candidates, {span}", fontsize=10)
    ax.legend(lines, [l.get_label() for l in lines], loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for), as scipy.stats.kendalltau gives it.

    O(n^2) in numpy, one row of pairs at a time: a few milliseconds for the few hundred candidates
    of a search. nan with fewer than two points or when either variable is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("kendall_tau: x and y must be 1-D of equal length")
    n = len(x)
    concordance, tied_x, tied_y = 0, 0, 0
    for i in range(n - 1):
        sx = np.sign(x[i + 1:] - x[i])
        sy = np.sign(y[i + 1:] - y[i])
        concordance += int((sx * sy).sum())
        tied_x += int((sx == 0).sum())
        tied_y += int((sy == 0).sum())
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return concordance / denominator if denominator > 0 else float("nan")


def plot_truth(true_acc: Sequence[float], fitness: Sequence[float], generation: Sequence[int],
               path: str | Path, best: int | None = None, ylabel: str = "top-1 (%)",
               xlabel: str = "true accuracy (%)", title: str = "") -> float:
    """Supernet fitness (y) vs true stand-alone accuracy (x) of every candidate: the first generation in
    one colour, later ones in another, `best` (an index) starred. Returns Kendall's tau-b."""
    x = np.asarray(true_acc, dtype=np.float64)
    y = np.asarray(fitness, dtype=np.float64)
    g = np.asarray(generation, dtype=np.int64)
    tau = kendall_tau(x, y)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    first = g == 0
    ax.scatter(x[first], y[first], s=14, c="#adb5bd", label=f"generation 0 (random, {int(first.sum())})")
    ax.scatter(x[~first], y[~first], s=14, c="#f77f00", alpha=0.8,
               label=f"generations 1-{int(g.max()) if len(g) else 0} ({int((~first).sum())})")
    if best is not None:
        ax.scatter([x[best]], [y[best]], s=140, marker="*", c="#003049", label="found", zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"supernet {ylabel}")
    ax.grid(alpha=0.3)
    tau_text = "n/a" if math.isnan(tau) else f"{tau:.2f}"
    ax.set_title(title or f"supernet score vs truth: Kendall tau {tau_text} over {len(x)} candidates", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return tau
