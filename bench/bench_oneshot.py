"""One-shot NAS against ground truth: a supernet over the NAS-Bench-201 cell space on real CIFAR-10.

The question every NAS user asks first: does the supernet rank architectures the way training
them alone would, and does the search therefore return a good one? NAS-Bench-201 trained every
one of its 15,625 cells alone, so both can be measured, through the machinery users run:

1. supernet: `python -m fastnas.train` (or torchrun with `--nproc`) on the 25,000-image training
   half (a seeded, class-balanced split, `data.holdout=0.5`), or `--checkpoint` to reuse one;
2. ranking fidelity: K cells drawn uniformly from the table (`--arch-seed`), each scored by the
   `Evaluator` (exact BN recalibration on training-half images, fitness on held-out images) and
   held against `cifar10valid_valid` and `cifar10_test`: Kendall tau-b, Spearman rho, precision at
   the top 10 %, beside the zero-cost baseline "more parameters is better" on the same cells;
3. search outcome: the genetic search (fastnas.evolution) with the `mfg`, `rea`, `random` and
   `boltzmann` selectors (`boltzmann` = the same MFG selector with lam = 0: the crowding term's ablation), `--search-seeds` seeds each at a budget of `--budget`
   evaluated cells, scored by the `cifar10_test` of the cell each returns. Fitness comes from
   one memo shared by all runs (same supernet, same images: the same number).

Outputs: the JSON (`--json`), a scatter plot of one-shot fitness vs stand-alone accuracy
(`--plot`, default beside the JSON) and a summary on stdout.

    python bench/bench_oneshot.py --json runs/oneshot/oneshot.json            # the full benchmark
    python bench/bench_oneshot.py --quick --json runs/oneshot/quick.json      # minutes
    python bench/bench_oneshot.py --checkpoint runs/oneshot/supernet/checkpoint.pt --archs 200
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.config import load_config  # noqa: E402
from fastnas.cli import cli_entry, parse_args  # noqa: E402
from fastnas.errors import UserError  # noqa: E402
from fastnas.groundtruth import NB201_TABLE, REPORT_COLUMN, SEARCH_COLUMN, GroundTruth  # noqa: E402

CONFIG = REPO / "configs" / "nb201_cifar10.yaml"
SELECTORS = ("mfg", "rea", "random", "boltzmann")
QUICK = ["train.epochs=3", "data.calib_images=512", "data.val_images=1000"]


def parse_command_line(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG), help="run config (space nb201, CIFAR-10 data, training recipe)")
    p.add_argument("--checkpoint", help="reuse this trained NB201 supernet instead of training one")
    p.add_argument("--csv", default=str(NB201_TABLE), help="the NAS-Bench-201 table")
    p.add_argument("--archs", type=int, default=200, help="cells drawn for the ranking (K)")
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--search-seeds", type=int, default=10)
    p.add_argument("--budget", type=int, default=100, help="evaluated cells per search")
    p.add_argument("--selectors", default=",".join(SELECTORS))
    p.add_argument("--nproc", type=int, default=1, help="> 1: train with torchrun --nproc_per_node")
    p.add_argument("--out", default="runs/oneshot", help="run folder (supernet, plot)")
    p.add_argument("--quick", action="store_true", help="3 epochs, 50 cells, 3 search seeds, fewer images")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="scatter plot PNG (default: beside --json, or in --out)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parse_args(p, argv)
    if args.quick:
        args.archs, args.search_seeds = min(args.archs, 50), min(args.search_seeds, 3)
        args.overrides = QUICK + list(args.overrides)
    if args.archs < 10 or args.search_seeds < 1 or args.budget < 2:
        raise UserError("--archs must be >= 10, --search-seeds >= 1 and --budget >= 2")
    unknown = set(args.selectors.split(",")) - set(SELECTORS)
    if unknown:
        raise UserError(f"--selectors: unknown {sorted(unknown)[0]!r} (allowed: {', '.join(SELECTORS)})")
    return args


# ----------------------------------------------------------------------------- 1. the supernet

def train_supernet(args, overrides: list[str]) -> tuple[str, float]:
    """Train through the product's own entry point; a finished run is not retrained (it resumes to done)."""
    cmd = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}", "-m", "fastnas.train"]
           if args.nproc > 1 else [sys.executable, "-m", "fastnas.train"])
    start = time.perf_counter()
    run = subprocess.run(cmd + ["--config", args.config, *overrides], cwd=os.getcwd())
    if run.returncode != 0:
        raise UserError(f"supernet training failed (exit {run.returncode}); its output is above")
    return str(Path(load_config(args.config, overrides).train.run_dir) / "checkpoint.pt"), time.perf_counter() - start


# ----------------------------------------------------------------------------- 2. ranking fidelity

def precision_at_top(score: np.ndarray, truth: np.ndarray, share: float = 0.1) -> float:
    """Share of the truly best `share` of cells that `score` also puts in its best `share`."""
    k = max(1, int(round(share * len(score))))
    return len(set(np.argsort(-score, kind="stable")[:k]) & set(np.argsort(-truth, kind="stable")[:k])) / k


def rank_stats(score: np.ndarray, truth: dict[str, np.ndarray]) -> dict:
    from scipy import stats
    return {"kendall_tau_valid": float(stats.kendalltau(score, truth[SEARCH_COLUMN]).statistic),
            "kendall_tau_test": float(stats.kendalltau(score, truth[REPORT_COLUMN]).statistic),
            "spearman_valid": float(stats.spearmanr(score, truth[SEARCH_COLUMN]).statistic),
            "spearman_test": float(stats.spearmanr(score, truth[REPORT_COLUMN]).statistic),
            "precision_top10": precision_at_top(score, truth[SEARCH_COLUMN])}


# ----------------------------------------------------------------------------- 3. search outcome

def run_search(name: str, space, fitness, cfg, seed: int, budget: int):
    """The architecture one search returns (best by fitness among `budget` evaluated cells)."""
    from fastnas.evolution import Evolution
    from fastnas.search import build_selector
    from fastnas.selection import make_selector

    s = cfg.search
    if name == "random":
        rng = np.random.default_rng(seed)
        archs = list(dict.fromkeys(space.sample(rng) for _ in range(50 * budget)))[:budget]
        scores = fitness(archs)
        return archs[int(np.argmax(scores))]
    if name == "rea":                               # Real et al.'s protocol, as in bench_nb201.py
        evo = Evolution(space, fitness, make_selector("rea", sample_size=3), population=10, children=1, elites=0,
                        mutation="one_position", crossover_prob=0.0, max_evaluations=budget,
                        generations=10 ** 9, seed=seed)
    else:
        lam0 = dict(tau=s.tau or None, lam=0.0, spread_share=s.spread_share)      # boltzmann: the rule's tau, lam 0
        selector = build_selector(s) if name == "mfg" else make_selector("mfg", **lam0)
        evo = Evolution(space, fitness, selector, population=s.population, elites=s.elites,
                        mutation_prob=s.mutation_prob, crossover=s.crossover, crossover_prob=s.crossover_prob,
                        max_evaluations=budget, generations=10 ** 9, seed=seed)
    return evo.run().best_arch


# ----------------------------------------------------------------------------- picture

def scatter(path: Path, fitness: np.ndarray, true_valid: np.ndarray, label: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = true_valid >= np.quantile(true_valid, 0.9)
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    ax.scatter(true_valid[~top], fitness[~top], s=12, c="#6c757d", label="cells")
    ax.scatter(true_valid[top], fitness[top], s=22, c="#d62828", label="truly best 10 %")
    ax.set_xlabel(f"stand-alone accuracy, NB201 {SEARCH_COLUMN} (%)")
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

@cli_entry
def main(argv=None) -> int:
    args = parse_command_line(argv)
    overrides = [f"train.run_dir={args.out}/supernet", f"eval.checkpoint={args.out}/supernet/checkpoint.pt",
                 *args.overrides]
    cfg = load_config(args.config, overrides)
    if cfg.space.type != "nb201":
        raise UserError(f"{args.config}: bench_oneshot needs space.type=nb201, not {cfg.space.type!r}")
    train_s = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, train_s = train_supernet(args, overrides)

    import torch
    from fastnas.evaluate import build_evaluator
    from fastnas.fitness import fitness_of

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluator = build_evaluator(cfg, device, checkpoint)
    space = evaluator.space
    truth = GroundTruth.load(space, args.csv)

    def fitness(archs):
        return [fitness_of(r, cfg.eval.fitness) for r in evaluator.evaluate(archs)]

    # 2. ranking fidelity on K uniformly drawn cells
    t0 = time.perf_counter()
    rows = np.random.default_rng(args.arch_seed).choice(len(truth), args.archs, replace=False)
    archs = [truth.archs[i] for i in rows]
    results = evaluator.evaluate(archs)
    score = np.array([fitness_of(r, cfg.eval.fitness) for r in results])
    params = np.array([space.cost(a).params for a in archs], dtype=np.float64)
    true = {c: truth.values(archs, c) for c in (SEARCH_COLUMN, REPORT_COLUMN)}
    supernet_stats, params_stats = rank_stats(score, true), rank_stats(params, true)
    rank_s = time.perf_counter() - t0
    print(f"ranking of {args.archs} cells ({rank_s:.0f} s): one-shot Kendall tau {supernet_stats['kendall_tau_valid']:.3f} "
          f"(Spearman {supernet_stats['spearman_valid']:.3f}, precision@10% {supernet_stats['precision_top10']:.2f}); "
          f"params {params_stats['kendall_tau_valid']:.3f} ({params_stats['spearman_valid']:.3f}, "
          f"{params_stats['precision_top10']:.2f})", flush=True)

    # 3. search outcome
    t0 = time.perf_counter()
    search = {}
    for name in args.selectors.split(","):
        found = [run_search(name, space, fitness, cfg, seed, args.budget) for seed in range(args.search_seeds)]
        tests = truth.values(found, REPORT_COLUMN)
        search[name] = {"mean": float(tests.mean()), "std": float(tests.std(ddof=1)) if len(tests) > 1 else 0.0,
                        "n": len(tests), "archs": [space.to_string(a) for a in found]}
        print(f"search {name:>9}: {REPORT_COLUMN} {search[name]['mean']:.2f} ± {search[name]['std']:.2f} "
              f"over {len(tests)} seeds ({len(evaluator.results)} cells scored so far)", flush=True)
    search_s = time.perf_counter() - t0

    from fastnas.checkpoint import load_checkpoint
    from fastnas.config import config_from_record
    trained = config_from_record(load_checkpoint(checkpoint)["config"])     # the recipe the weights came from
    out = {**{k: supernet_stats[k] for k in ("kendall_tau_valid", "kendall_tau_test", "spearman_valid",
                                               "spearman_test", "precision_top10")},
           "params_kendall_tau_valid": params_stats["kendall_tau_valid"],
           "params_spearman_valid": params_stats["spearman_valid"],
           "params_precision_top10": params_stats["precision_top10"],
           "search": search, "optimum_test": truth.best(REPORT_COLUMN),
           "supernet": {"N": space.cfg.cells_per_stage, "C": space.cfg.cell_channels, "epochs": trained.train.epochs,
                        "sampler": trained.train.sampler, "train_images": _train_images(trained), "wall_s": train_s,
                        "checkpoint": checkpoint},
           "evaluation": {"fitness": cfg.eval.fitness, "calib_images": len(evaluator.calib.labels),
                          "val_images": len(evaluator.val.labels), "cells_scored": len(evaluator.results),
                          "ranking_s": rank_s, "search_s": search_s},
           "archs": args.archs, "arch_seed": args.arch_seed, "budget": args.budget,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"}
    plot = Path(args.plot) if args.plot else (Path(args.json).with_suffix(".png") if args.json
                                               else Path(args.out) / "oneshot.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    scatter(plot, score, true[SEARCH_COLUMN], f"one-shot fitness ({cfg.eval.fitness})",
            f"{args.archs} NB201 cells: Kendall tau {out['kendall_tau_valid']:.2f} "
            f"(params alone {out['params_kendall_tau_valid']:.2f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"oneshot: tau {out['kendall_tau_valid']:.3f} vs params {out['params_kendall_tau_valid']:.3f}; "
          + ", ".join(f"{n} {v['mean']:.2f}" for n, v in search.items())
          + f" (optimum {out['optimum_test']:.2f}); plot {plot}")
    return 0


def _train_images(cfg) -> int:
    from fastnas.data import scan_split
    n = len(scan_split(cfg.data.path, "train"))
    return n - int(round(n * cfg.data.holdout)) if cfg.data.holdout else n


if __name__ == "__main__":
    sys.exit(main())
