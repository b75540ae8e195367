"""Evolutionary architecture search on a trained supernet: `python -m fastnas.search`.

    python -m fastnas.search --eval-batch 1024 [--config PATH] [--checkpoint CKPT] [section.key=value ...]
    torchrun --nproc_per_node=2 -m fastnas.search --config configs/quickstart.yaml   # evaluation sharded

Wires the pieces together: the supernet checkpoint and decoded-once calibration/validation sets
(fastnas.evaluate.build_evaluator), the selector (fastnas.selection, MFG by default), the genetic
loop with constraints (fastnas.evolution), and the outputs in `search.out_dir`:

  best.json      architecture string and ints, top-1/top-5, MACs, params (and latency with a table)
  history.csv    every evaluated candidate with its generation
  progress.png   best and mean fitness per generation, parent diversity (numbers in progress.json)
  pareto.png     fitness vs MACs of every candidate, Pareto front marked
  best_arch.png  the best architecture (layer by layer; a cell graph for NB201)
  truth.png      with search.ground_truth: supernet fitness vs true accuracy of every candidate
  state.json     the resumable search state (written atomically every generation)

With `search.ground_truth` (`nb201`: the bundled NAS-Bench-201 table, or a CSV of its format),
history.csv also has each candidate's true accuracies (`true_valid`: cifar10valid_valid, what a
search may look at; `true_test`: cifar10_test) and best.json the found one's `true_test` and
`true_rank` among all cells of the table (1 = best).

A search restarted with the same settings resumes from state.json and reaches the same result.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

from fastnas.config import load_config
from fastnas.cli import cli_entry, parse_args
from fastnas.errors import UserError


def parse_command_line(argv):
    p = argparse.ArgumentParser(prog="python -m fastnas.search", description=__doc__.splitlines()[0],
                                epilog="Any config value can be overridden as section.key=value, "
                                       "e.g. search.generations=30 search.tau=0.3 data.val_images=2000.")
    p.add_argument("--config", help="run config (YAML); default: built-in defaults")
    p.add_argument("--eval-batch", type=int, help="images per forward pass during evaluation (eval.eval_batch)")
    p.add_argument("--checkpoint", help="supernet checkpoint (eval.checkpoint)")
    p.add_argument("--out", help="output folder (search.out_dir)")
    p.add_argument("--selector", help="mfg (default), rea, tournament, truncation, boltzmann, ... (search.selector)")
    p.add_argument("--mode", choices=["exact", "approx"], help="BN recalibration mode (eval.mode)")
    p.add_argument("--max-latency-ms", type=float, help="latency bound; needs --latency-table (search.max_latency_ms)")
    p.add_argument("--latency-table", help="LUT.json from `python -m fastnas.latency` (search.latency_table)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing state.json and start over")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parse_args(p, argv)
    flags = {"eval.eval_batch": args.eval_batch, "eval.checkpoint": args.checkpoint, "search.out_dir": args.out,
             "search.selector": args.selector, "eval.mode": args.mode,
             "search.max_latency_ms": args.max_latency_ms, "search.latency_table": args.latency_table}
    overrides = list(args.overrides) + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                        for k, v in flags.items() if v is not None]
    return args, overrides


def build_selector(s):
    from fastnas.selection import make_selector
    mfg = dict(tau=s.tau or None, lam=None if s.target_diversity else s.lam,
               target_diversity=s.target_diversity or None, spread_share=s.spread_share)
    kwargs = {"mfg": mfg, "boltzmann": dict(tau=s.tau) if s.tau else {}}.get(s.selector, {})
    try:
        return make_selector(s.selector, **kwargs)
    except ValueError as e:
        raise UserError(f"search.selector: {e}") from None


def ground_truth_path(value: str) -> Path:
    """`search.ground_truth` as a file (`nb201`: the bundled NAS-Bench-201 table); one UserError if missing."""
    from fastnas.groundtruth import NB201_TABLE
    path = NB201_TABLE if value == "nb201" else Path(value)
    if not path.is_file():
        raise UserError(f"search.ground_truth: no table {str(path)!r} (use nb201 or the path of a CSV with "
                        f"arch_str, cifar10valid_valid and cifar10_test columns)")
    return path


def load_ground_truth(value: str, space):
    """The GroundTruth of `search.ground_truth` for `space`, or None when unset; a mismatch is one UserError."""
    if not value:
        return None
    from fastnas.groundtruth import GroundTruth
    path = ground_truth_path(value)
    try:
        return GroundTruth.load(space, path)
    except UserError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"search.ground_truth: {path} does not match the search space "
                        f"({type(space).__name__}): {first}") from None


def shown_path(path: str) -> str:
    """A path as the outputs record it: relative to the repository when inside it."""
    from fastnas.config import REPO_ROOT
    full = Path(path).resolve()
    return str(full.relative_to(REPO_ROOT)) if full.is_relative_to(REPO_ROOT) else str(full)


def load_progress(path: Path) -> list[dict]:
    """progress.json's per-generation records ([] when missing or unreadable)."""
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict) and "generation" in r] if isinstance(records, list) else []


def build_constraints(s, space):
    from fastnas.constraints import Constraints
    latency = None
    if s.max_latency_ms > 0:
        from fastnas.latency import LatencyTable
        latency = LatencyTable.load(s.latency_table)
        latency.check_space(space.cfg)
    return Constraints(min_macs=s.min_macs, max_macs=s.max_macs, min_params=s.min_params,
                       max_params=s.max_params, max_latency_ms=s.max_latency_ms, latency=latency), latency


@cli_entry
def main(argv=None) -> int:
    args, overrides = parse_command_line(argv)
    cfg = load_config(args.config, overrides)
    s = cfg.search

    from fastnas.dist import broadcast_object, print0, process_group
    from fastnas.evaluate import build_evaluator
    from fastnas.fitness import Result, fitness_of, fitness_standard_error
    from fastnas.evolution import Evolution
    from fastnas.atomic import write_json_atomic
    from fastnas.report import fitness_label

    selector = build_selector(s)                    # settings errors first, before any decoding
    if s.ground_truth:
        ground_truth_path(s.ground_truth)           # a missing table is an error before any decoding
    if s.max_latency_ms > 0 and not s.latency_table:
        raise UserError("search.max_latency_ms needs a latency table: --latency-table LUT.json "
                        "(make one with python -m fastnas.latency)")
    with process_group() as env:
        evaluator = build_evaluator(cfg, env.device)
        space = evaluator.space                     # the checkpoint's space: the weights fix it
        constraints, latency = build_constraints(s, space)
        out = Path(s.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.json"         # top-5 and loss of every candidate, beside the state
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() and not args.fresh else {}
        truth = load_ground_truth(s.ground_truth, space)     # every rank: a mismatch stops them all alike
        progress_path = out / "progress.json"       # per-generation numbers, kept across resumes
        records = [] if args.fresh else load_progress(progress_path)

        # Standard error of every fitness seen (from the validation set's size and spread), rebuilt on resume:
        # the MFG default rule's temperature follows it.
        noise = {k: fitness_standard_error(Result(*m), cfg.eval.fitness) for k, m in metrics.items() if len(m) == 5}

        def fitness(archs):
            results = evaluator.evaluate(archs)
            for a, r in zip(archs, results):
                metrics[space.to_string(a)] = [r.top1, r.top5, r.loss, r.loss_std, r.n]
                noise[space.to_string(a)] = fitness_standard_error(r, cfg.eval.fitness)
            if env.is_main:                         # before the generation's state.json: never behind it
                write_json_atomic(metrics_path, metrics)
            return [fitness_of(r, cfg.eval.fitness) for r in results]

        def progress(g):
            records[:] = [r for r in records if r["generation"] < g.generation]   # a rerun replaces later ones
            records.append({"generation": g.generation, "evaluations": g.evaluations,
                            "best": g.best_fitness, "mean": g.mean_fitness,
                            "parent_diversity": g.parent_diversity})
            if env.is_main:
                write_json_atomic(progress_path, records)
            print0(f"gen {g.generation:3d}  evaluated {g.evaluations:5d}  best {g.best_fitness:6.2f}  "
                   f"mean {g.mean_fitness:6.2f}  parent diversity {g.parent_diversity:.3f}  "
                   f"{g.candidates_per_s:6.2f} cand/s")

        print0(f"search: {s.selector} selector, population {s.population}, {s.generations} generations, "
               f"{len(evaluator.calib.labels)} calibration / {len(evaluator.val.labels)} validation images, "
               f"eval batch {cfg.eval.eval_batch}, {cfg.eval.mode} BN recalibration, world size {env.world_size}")
        start = time.perf_counter()
        evo = Evolution(space, fitness, selector, population=s.population, generations=s.generations,
                        elites=s.elites, mutation_prob=s.mutation_prob, crossover=s.crossover,
                        crossover_prob=s.crossover_prob, constraints=constraints, max_retries=s.max_retries,
                        seed=s.seed, state_path=out / "state.json", resume=not args.fresh,
                        save_state=env.is_main, on_generation=progress,
                        fitness_se=lambda: math.sqrt(sum(v * v for v in noise.values()) / max(len(noise), 1)),
                        fitness_definition=evaluator.definition(cfg.eval.fitness),
                        agree=broadcast_object if env.distributed else None)
        result = evo.run()
        if env.is_main:
            write_json_atomic(metrics_path, metrics)
            summary = write_outputs(out, space, result, metrics, latency, truth=truth, progress=records,
                                    fitness_kind=cfg.eval.fitness)
            print0(f"search done in {time.perf_counter() - start:.0f} s: best {space.to_string(result.best_arch)} "
                   f"{fitness_label(cfg.eval.fitness)} {result.best_fitness:.2f}  -> {out}/best.json")
            if "true_test" in summary:
                print0(f"ground truth ({Path(truth.source).name}): the found cell's true test accuracy "
                       f"{summary['true_test']:.2f}%, rank {summary['true_rank']} of {len(truth)}")
    return 0


def write_outputs(out: Path, space, result, metrics: dict, latency=None, truth=None,
                  progress: list[dict] | None = None, fitness_kind: str = "top1") -> dict:
    """history.csv, best.json and the pictures (report.py) of a finished search; returns best.json's content.

    truth: a fastnas.groundtruth.GroundTruth (true accuracies in history.csv and best.json, truth.png);
    progress: the per-generation records of progress.json (progress.png).
    """
    from fastnas.atomic import atomic_write, write_json_atomic
    from fastnas.groundtruth import REPORT_COLUMN, SEARCH_COLUMN
    from fastnas.report import draw_architecture, fitness_label, plot_pareto, plot_progress, plot_truth

    rows = []
    for c in result.history:
        name = space.to_string(c.arch)
        macs, params = space.cost(c.arch)
        top1, top5, loss = metrics.get(name, [c.fitness, None, None])[:3]
        row = {"generation": c.generation, "arch": name, "fitness": round(c.fitness, 5), "top1": round(top1, 4),
               "top5": None if top5 is None else round(top5, 4), "loss": None if loss is None else round(loss, 5),
               "macs": macs, "params": params}
        if latency is not None:
            row["latency_ms"] = round(latency.predict(c.arch), 4)
        if truth is not None:
            known = c.arch in truth
            row["true_valid"] = truth.value(c.arch, SEARCH_COLUMN) if known else None
            row["true_test"] = truth.value(c.arch, REPORT_COLUMN) if known else None
        rows.append(row)
    with atomic_write(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    best = space.to_string(result.best_arch)
    macs, params = space.cost(result.best_arch)
    top1, top5, loss = metrics.get(best, [result.best_fitness, None, None])[:3]
    summary = {"arch": best, "encoding": list(result.best_arch), "top1": top1, "top5": top5, "loss": loss,
               "macs": macs, "params": params, "resolution": space.cfg.resolution,
               "evaluated": len(rows), "generations": result.generations}
    if latency is not None:
        summary["latency_ms"] = latency.predict(result.best_arch)
    title = f"best: top-1 {top1:.2f}%, {macs / 1e6:.1f}M MACs, {params / 1e6:.2f}M params"
    if truth is not None and result.best_arch in truth:
        summary.update(true_test=truth.value(result.best_arch, REPORT_COLUMN),
                       true_rank=truth.rank(result.best_arch, REPORT_COLUMN),
                       true_valid=truth.value(result.best_arch, SEARCH_COLUMN), ground_truth=shown_path(truth.source))
        title += f"\ntrue test {summary['true_test']:.2f}%, rank {summary['true_rank']} of {len(truth)}"
    write_json_atomic(out / "best.json", summary)
    best_index = next(i for i, r in enumerate(rows) if r["arch"] == best)
    ylabel = fitness_label(fitness_kind)
    if progress:
        plot_progress(progress, out / "progress.png", ylabel=ylabel)
    plot_pareto([r["macs"] for r in rows], [r["fitness"] for r in rows], out / "pareto.png", best=best_index,
                title=f"{len(rows)} candidates, {space.cfg.resolution}px", ylabel=ylabel)
    draw_architecture(space, result.best_arch, out / "best_arch.png", title=title)
    if truth is not None:
        known = [i for i, r in enumerate(rows) if r["true_valid"] is not None]
        if known:
            plot_truth([rows[i]["true_valid"] for i in known], [rows[i]["fitness"] for i in known],
                       [rows[i]["generation"] for i in known], out / "truth.png",
                       best=known.index(best_index) if best_index in known else None, ylabel=ylabel,
                       xlabel="NAS-Bench-201 accuracy trained alone (%, cifar10-valid)")
    return summary


if __name__ == "__main__":
    sys.exit(main())
