"""The whole job on the bundled sample: supernet training -> evolutionary search -> export.

    python -m fastnas.quickstart [--config configs/quickstart.yaml] [--nproc 2] [--fresh] [section.key=value ...]
    python -m fastnas.quickstart --config configs/quickstart_imagenette.yaml     # the MBConv/Imagenette one

Each step is the real command a user would type (2-process torchrun for training), run one after
another; a step that finds its outputs already complete resumes or returns at once, so a second
run is quick. `--fresh` deletes the quickstart's run folders first.

Where the config names a ground-truth table (`search.ground_truth`, NAS-Bench-201 for the default
quickstart), it then says how good the found cell really is: its accuracy when trained alone and
its rank among all cells of the table, beside the median of the random cells the search started
from, and writes those facts to `summary.json` beside the search folder (`summarize`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fastnas.config import REPO_ROOT, load_config
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError


def _run(title: str, cmd: list[str], env: dict | None = None) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise UserError(f"step '{title}' failed with exit code {result.returncode} (command above)")
    print(f"=== {title}: done in {time.perf_counter() - start:.0f} s", flush=True)


def _export_dir(cfg) -> Path:
    return Path(cfg.search.out_dir).parent / "export"


def _summary_path(cfg) -> Path:
    return Path(cfg.search.out_dir).parent / "summary.json"


def summarize(search_dir: str | Path, truth, wall_s: float) -> dict:
    """What the ground truth says about a finished search in `search_dir` (its best.json and history.csv).

    `truth` is a fastnas.groundtruth.GroundTruth of the searched space. The first six keys are the
    quickstart's promise; the rest give scale (the space's optimum and median) and detail.
    """
    import numpy as np
    from fastnas.groundtruth import REPORT_COLUMN, SEARCH_COLUMN
    from fastnas.search import shown_path

    search_dir = Path(search_dir)
    best = json.loads((search_dir / "best.json").read_text())
    with open(search_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    space = truth.space
    found = space.from_string(best["arch"])
    first = [space.from_string(r["arch"]) for r in rows if int(r["generation"]) == 0]
    if not first:
        raise UserError(f"{search_dir / 'history.csv'}: no generation-0 candidates")
    first_median = float(np.median(truth.values(first, REPORT_COLUMN)))
    return {"found_arch": best["arch"],
            "found_true_test": truth.value(found, REPORT_COLUMN),
            "found_rank": truth.rank(found, REPORT_COLUMN),
            "first_generation_median_true_test": first_median,
            "candidates_evaluated": len(rows),
            "wall_s": round(float(wall_s), 1),
            "first_generation_median_rank": truth.rank_of_value(first_median, REPORT_COLUMN),
            "first_generation_size": len(first),
            "found_true_valid": truth.value(found, SEARCH_COLUMN),
            "optimum_test": truth.best(REPORT_COLUMN),
            "median_test": float(np.median(truth.columns[REPORT_COLUMN])),
            "cells": len(truth),
            "ground_truth": shown_path(truth.source)}


def summary_lines(summary: dict) -> list[str]:
    """The few lines the quickstart prints about the found cell (from `summarize`)."""
    n = summary["cells"]
    return [f"How good is the found cell? The NAS-Bench-201 table ({summary['ground_truth']}): every cell "
            f"trained alone on CIFAR-10, 200 epochs, test accuracy",
            f"  found cell         {summary['found_arch']}",
            f"  found cell         {summary['found_true_test']:.2f} % test, rank {summary['found_rank']:,} of {n:,} "
            f"(the space's best {summary['optimum_test']:.2f} %, median {summary['median_test']:.2f} %)",
            f"  first generation   median {summary['first_generation_median_true_test']:.2f} % test of its "
            f"{summary['first_generation_size']} random cells, rank {summary['first_generation_median_rank']:,} "
            f"of {n:,}",
            f"  {summary['candidates_evaluated']} candidates evaluated; {summary['wall_s']:.0f} s in all"]


def write_summary(path: str | Path, summary: dict) -> None:
    from fastnas.atomic import write_json_atomic
    write_json_atomic(Path(path), summary)


def _ground_truth(cfg):
    """The config's ground-truth table for its space (relative paths from the repository root), or None."""
    value = cfg.search.ground_truth
    if not value:
        return None
    from fastnas.search import load_ground_truth
    from fastnas.spaces import build_space
    if value != "nb201" and not Path(value).is_absolute():
        value = str(REPO_ROOT / value)
    return load_ground_truth(value, build_space(cfg.space))


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--nproc", type=int, default=2, help="training processes (torchrun --nproc_per_node)")
    p.add_argument("--fresh", action="store_true", help="delete earlier quickstart outputs first")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="passed to every step")
    args = parse_args(p, argv)

    cfg = load_config(args.config, args.overrides)
    truth = _ground_truth(cfg)           # a bad table is an error now, not after the training
    if args.fresh:                       # only the folders this job writes, never their parents
        for folder in (cfg.train.run_dir, cfg.search.out_dir, _export_dir(cfg)):
            shutil.rmtree(REPO_ROOT / folder, ignore_errors=True)
        (REPO_ROOT / _summary_path(cfg)).unlink(missing_ok=True)
    py = sys.executable
    export_dir = _export_dir(cfg)
    best = Path(cfg.search.out_dir) / "best.json"
    start = time.perf_counter()
    # The training processes share the cores: an equal share of threads each, no oversubscription.
    threads = str(max(1, (os.cpu_count() or 2) // args.nproc))
    _run("1/3 train the supernet", [py, "-m", "torch.distributed.run", "--standalone",
                                     f"--nproc_per_node={args.nproc}", "-m", "fastnas.train", "--config", args.config,
                                     *args.overrides],
         env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)})
    _run("2/3 search", [py, "-m", "fastnas.search", "--config", args.config, *args.overrides])
    _run("3/3 export", [py, "-m", "fastnas.export", "--arch", str(best), "--supernet", cfg.eval.checkpoint,
                        "--out", str(export_dir), "--config", args.config, *args.overrides])
    wall_s = time.perf_counter() - start
    search_dir = Path(cfg.search.out_dir)
    outputs = [("supernet checkpoint", cfg.eval.checkpoint),
               ("best architecture", best),
               ("every candidate", search_dir / "history.csv"),
               ("search progress", search_dir / "progress.png"),
               ("Pareto front", search_dir / "pareto.png"),
               ("architecture picture", search_dir / "best_arch.png")]
    if truth is not None:
        summary = summarize(REPO_ROOT / search_dir, truth, wall_s)
        write_summary(REPO_ROOT / _summary_path(cfg), summary)
        print("\n" + "\n".join(summary_lines(summary)), flush=True)
        outputs += [("score vs truth", search_dir / "truth.png"), ("summary", _summary_path(cfg))]
    outputs.append(("exported model", export_dir))
    print(f"\nquickstart finished in {wall_s:.0f} s. Outputs:")
    for label, path in outputs:
        print(f"  {label:22s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
