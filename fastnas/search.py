"""Evolutionary architecture search on a trained supernet: `python -m fastnas.search`.

    python -m fastnas.search --eval-batch 1024 [--config PATH] [--checkpoint CKPT] [section.key=value ...]
    torchrun --nproc_per_node=2 -m fastnas.search --config configs/quickstart.yaml   # evaluation sharded

Wires the pieces together: the supernet checkpoint and decoded-once calibration/validation sets
(fastnas.evaluate.build_evaluator), the selector (fastnas.selection, MFG by default), the genetic
loop with constraints (fastnas.evolution), and the outputs in `search.out_dir`:

  best.json      architecture string and ints, top-1/top-5, MACs, params (and latency with a table)
  history.csv    every evaluated candidate with its generation
  pareto.png     top-1 vs MACs of every candidate, Pareto front marked
  best_arch.png  the best architecture layer by layer
  state.json     the resumable search state (written atomically every generation)

A search restarted with the same settings resumes from state.json and reaches the same result.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from fastnas.config import load_config
from fastnas.errors import UserError, cli_entry


def parse_args(argv):
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
    args = p.parse_args(argv)
    flags = {"eval.eval_batch": args.eval_batch, "eval.checkpoint": args.checkpoint, "search.out_dir": args.out,
             "search.selector": args.selector, "eval.mode": args.mode,
             "search.max_latency_ms": args.max_latency_ms, "search.latency_table": args.latency_table}
    overrides = list(args.overrides) + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                        for k, v in flags.items() if v is not None]
    return args, overrides


def build_selector(s):
    from fastnas.selection import make_selector
    mfg = dict(tau=s.tau, lam=s.lam, target_diversity=s.target_diversity or None)
    kwargs = {"mfg": mfg, "boltzmann": dict(tau=s.tau)}.get(s.selector, {})
    try:
        return make_selector(s.selector, **kwargs)
    except ValueError as e:
        raise UserError(f"search.selector: {e}") from None


def build_constraints(s, space):
    from fastnas.evolution import Constraints
    latency = None
    if s.max_latency_ms > 0:
        from fastnas.latency import LatencyTable
        latency = LatencyTable.load(s.latency_table)
        latency.check_space(space.cfg)
    return Constraints(min_macs=s.min_macs, max_macs=s.max_macs, min_params=s.min_params,
                       max_params=s.max_params, max_latency_ms=s.max_latency_ms, latency=latency), latency


@cli_entry
def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    s = cfg.search

    from fastnas.dist import cleanup, init_distributed, print0
    from fastnas.evaluate import build_evaluator, fitness_of
    from fastnas.evolution import Evolution
    from fastnas.evolution import write_json_atomic

    selector = build_selector(s)                    # settings errors first, before any decoding
    if s.max_latency_ms > 0 and not s.latency_table:
        raise UserError("search.max_latency_ms needs a latency table: --latency-table LUT.json "
                        "(make one with python -m fastnas.latency)")
    env = init_distributed()
    try:
        evaluator = build_evaluator(cfg, env.device)
        space = evaluator.space                     # the checkpoint's space: the weights fix it
        constraints, latency = build_constraints(s, space)
        out = Path(s.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.json"         # top-5 and loss of every candidate, beside the state
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() and not args.fresh else {}

        def fitness(archs):
            results = evaluator.evaluate(archs)
            for a, r in zip(archs, results):
                metrics[space.to_string(a)] = [r.top1, r.top5, r.loss]
            if env.is_main:                         # before the generation's state.json: never behind it
                write_json_atomic(metrics_path, metrics)
            return [fitness_of(r, cfg.eval.fitness) for r in results]

        def progress(g):
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
                        save_state=env.is_main, on_generation=progress)
        result = evo.run()
        if env.is_main:
            write_json_atomic(metrics_path, metrics)
            write_outputs(out, space, result, metrics, latency)
            print0(f"search done in {time.perf_counter() - start:.0f} s: best {space.to_string(result.best_arch)} "
                   f"top-1 {result.best_fitness:.2f}%  -> {out}/best.json")
    finally:
        cleanup()
    return 0


def write_outputs(out: Path, space, result, metrics: dict, latency=None) -> None:
    from fastnas.evolution import write_json_atomic
    from fastnas.report import draw_architecture, plot_pareto

    rows = []
    for c in result.history:
        name = space.to_string(c.arch)
        macs, params = space.cost(c.arch)
        top1, top5, loss = metrics.get(name, [c.fitness, None, None])
        row = {"generation": c.generation, "arch": name, "fitness": round(c.fitness, 5), "top1": round(top1, 4),
               "top5": None if top5 is None else round(top5, 4), "loss": None if loss is None else round(loss, 5),
               "macs": macs, "params": params}
        if latency is not None:
            row["latency_ms"] = round(latency.predict(c.arch), 4)
        rows.append(row)
    tmp = out / "history.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "history.csv")

    best = space.to_string(result.best_arch)
    macs, params = space.cost(result.best_arch)
    top1, top5, loss = metrics.get(best, [result.best_fitness, None, None])
    summary = {"arch": best, "encoding": list(result.best_arch), "top1": top1, "top5": top5, "loss": loss,
               "macs": macs, "params": params, "resolution": space.cfg.resolution,
               "evaluated": len(rows), "generations": result.generations}
    if latency is not None:
        summary["latency_ms"] = latency.predict(result.best_arch)
    write_json_atomic(out / "best.json", summary)
    best_index = next(i for i, r in enumerate(rows) if r["arch"] == best)
    plot_pareto([r["macs"] for r in rows], [r["top1"] for r in rows], out / "pareto.png", best=best_index,
                title=f"{len(rows)} candidates, {space.cfg.resolution}px")
    draw_architecture(space, result.best_arch, out / "best_arch.png",
                      title=f"best: top-1 {top1:.2f}%, {macs / 1e6:.1f}M MACs, {params / 1e6:.2f}M params")


if __name__ == "__main__":
    sys.exit(main())
