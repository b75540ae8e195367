"""NAS-Bench-201 tabular benchmark of the selection schemes, through the real genetic loop.

The cell space (6 edges x 5 operations, 15,625 architectures) is searched with fastnas.evolution;
the search sees only `--fitness-column` (cifar10valid_valid) and is scored by the `--report-column`
(cifar10_test) of its best-by-fitness architecture after B unique queries. Every GA selector runs
with the same population, mutation, crossover, elitism and budget; `rea` runs at the reference
protocol (population 10, sample size 3, one-edge mutation, steady state) to validate the harness,
and `random` is random search (B distinct architectures), checked against the exact expectation
of best-of-B computed from the table.

    python bench/bench_nb201.py --seeds 300 --json runs/nb201.json
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.errors import UserError, cli_entry  # noqa: E402
from fastnas.evolution import Evolution  # noqa: E402
from fastnas.groundtruth import NB201_TABLE, GroundTruth  # noqa: E402
from fastnas.selection import make_selector  # noqa: E402

EDGES = 6

def nb201_space():
    from fastnas.config import SpaceConfig
    from fastnas.spaces import build_space
    return build_space(SpaceConfig(type="nb201", resolution=32, num_classes=10))


def load_table(space, path: Path, fitness_col: str, report_col: str) -> tuple[GroundTruth, np.ndarray, np.ndarray]:
    """The table and its (fitness, report) columns, indexed by `truth.rows(archs)`."""
    truth = GroundTruth.load(space, path, columns=list(dict.fromkeys((fitness_col, report_col))))
    return truth, truth.columns[fitness_col], truth.columns[report_col]


def expected_best_of(fitness: np.ndarray, report: np.ndarray, budget: int) -> float:
    """Exact E[report of the best-by-fitness of `budget` distinct uniformly drawn architectures].

    With cells sorted by fitness, the best of B sits at rank r (1-based) with probability
    C(r-1, B-1) / C(N, B); tied fitness values share the mean report of their group."""
    order = np.argsort(fitness, kind="stable")
    f, rep = fitness[order], report[order]
    _, start, counts = np.unique(f, return_index=True, return_counts=True)
    rep = np.repeat(np.add.reduceat(rep, start) / counts, counts)
    n = len(f)
    r = np.arange(1, n + 1)
    ok = r >= budget
    lg = np.vectorize(math.lgamma)
    logp = np.full(n, -np.inf)
    logp[ok] = (lg(r[ok]) - lg(budget) - lg(r[ok] - budget + 1)
                - (math.lgamma(n + 1) - math.lgamma(budget + 1) - math.lgamma(n - budget + 1)))
    return float(np.sum(np.exp(logp) * rep))


# ----------------------------------------------------------------------------- runs

def ga_selectors(args) -> dict:
    mfg = dict(tau=args.tau, relative=args.relative, target_diversity=args.target_diversity)
    return {
        "mfg": lambda: make_selector("mfg", lam=args.lam, **mfg),
        "mfg_lam0": lambda: make_selector("mfg", lam=0.0, **{**mfg, "target_diversity": None}),
        "boltzmann": lambda: make_selector("boltzmann", tau=args.boltzmann_tau),
        "tournament": lambda: make_selector("tournament", k=3),
        "truncation": lambda: make_selector("truncation", top=0.25),
        "random_parents": lambda: make_selector("random"),
        "roulette": lambda: make_selector("roulette"),
        "ranking": lambda: make_selector("ranking"),
        "plus": lambda: make_selector("plus"),
        "sharing": lambda: make_selector("sharing"),
    }


def run_search(name, make, space, truth, fitness, seed, budget, args) -> np.ndarray:
    """Rows of the table queried by one search, in query order."""
    def evaluate(archs):
        return fitness[truth.rows(archs)].tolist()

    if name == "rea":
        evo = Evolution(space, evaluate, make_selector("rea", sample_size=3), population=10, children=1, elites=0,
                        mutation="one_position", crossover_prob=0.0, max_evaluations=budget,
                        generations=10 ** 9, seed=seed)
    else:
        evo = Evolution(space, evaluate, make(), population=args.population, elites=args.elites,
                        mutation=args.mutation, mutation_prob=args.mutation_prob, crossover=args.crossover,
                        crossover_prob=args.crossover_prob, max_evaluations=budget, generations=10 ** 9, seed=seed)
    result = evo.run()
    return truth.rows([c.arch for c in result.history])


def best_report(rows: np.ndarray, fitness, report, budgets) -> list[float]:
    """Report value of the best-by-fitness (first found on ties) among the first B queries."""
    out = []
    for b in budgets:
        head = rows[:b]
        out.append(float(report[head[np.argmax(fitness[head])]]))
    return out


def welch(a, b) -> tuple[float, float]:
    from scipy import stats
    t, p = stats.ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(NB201_TABLE))
    p.add_argument("--fitness-column", default="cifar10valid_valid")
    p.add_argument("--report-column", default="cifar10_test")
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--budgets", default="50,100,150,300")
    p.add_argument("--selectors", default="mfg,mfg_lam0,rea,random,tournament,truncation,boltzmann",
                   help="comma list; also: random_parents, roulette, ranking, plus, sharing")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--elites", type=int, default=2)
    p.add_argument("--mutation", default="one_position", choices=["one_position", "per_position"])
    p.add_argument("--mutation-prob", type=float, default=1 / EDGES)
    p.add_argument("--crossover", default="uniform", choices=["uniform", "single_point"])
    p.add_argument("--crossover-prob", type=float, default=0.0,
                   help="0: mutation only (measured better on NB201 for MFG and truncation)")
    p.add_argument("--tau", type=float, default=0.03,
                   help="MFG temperature (fitness %%): near-greedy, the regime where crowding pays; the table is noise-free")
    p.add_argument("--lam", type=float, default=1.0, help="MFG crowding price (start of the bisection)")
    p.add_argument("--target-diversity", type=float, default=None)
    p.add_argument("--relative", action="store_true", help="MFG tau/lam in units of the pool's fitness std")
    p.add_argument("--boltzmann-tau", type=float, default=0.5)
    p.add_argument("--quick", action="store_true", help="30 seeds")
    p.add_argument("--json", help="write the table here")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = 30
    budgets = [int(b) for b in args.budgets.split(",")]
    space = nb201_space()
    if args.seeds < 2 or not budgets or min(budgets) < 1 or max(budgets) > space.size:
        raise UserError(f"--seeds must be >= 2 and --budgets positive integers <= {space.size}")
    truth, fitness, report = load_table(space, Path(args.csv), args.fitness_column, args.report_column)
    makers = ga_selectors(args)
    names = args.selectors.split(",")
    for name in names:
        if name not in makers and name not in ("rea", "random"):
            raise UserError(f"unknown selector {name!r}")

    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        rows = []
        for seed in range(args.seeds):
            if name == "random":
                q = np.random.default_rng(seed).choice(len(fitness), max(budgets), replace=False)
            else:
                q = run_search(name, makers.get(name), space, truth, fitness, seed, max(budgets), args)
            rows.append(best_report(q, fitness, report, budgets))
        scores[name] = np.array(rows)          # (seeds, budgets)
        seconds[name] = time.perf_counter() - t0
        print(f"  {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)

    rs_expected = {b: expected_best_of(fitness, report, b) for b in budgets}
    table = {b: {n: {"mean": float(s[:, j].mean()), "std": float(s[:, j].std(ddof=1)), "n": int(len(s))}
                 for n, s in scores.items()} for j, b in enumerate(budgets)}

    width = max(len(n) for n in names) + 2
    print(f"NB201 {args.report_column} of best-by-{args.fitness_column}, mean ± std over {args.seeds} seeds")
    print(" " * width + "".join(f"{f'B={b}':>16}" for b in budgets))
    for n in names:
        print(f"{n:<{width}}" + "".join(f"{table[b][n]['mean']:>9.2f} ± {table[b][n]['std']:.2f}" for b in budgets))
    print(f"{'rs_expected':<{width}}" + "".join(f"{rs_expected[b]:>16.2f}" for b in budgets))

    checks = {}
    if "random" in scores:
        z = [(table[b]["random"]["mean"] - rs_expected[b]) / (table[b]["random"]["std"] / math.sqrt(args.seeds))
             for b in budgets]
        checks["random_vs_exact_z"] = {b: float(x) for b, x in zip(budgets, z)}
        checks["random_vs_exact_ok"] = bool(all(abs(x) <= 2 for x in z))
        print("random search vs exact best-of-B: z = " + ", ".join(f"{x:+.2f}" for x in z)
              + ("  OK" if checks["random_vs_exact_ok"] else "  MISMATCH (|z| > 2)"))
    if "mfg" in scores and "mfg_lam0" in scores:
        tests = {b: welch(scores["mfg"][:, j], scores["mfg_lam0"][:, j]) for j, b in enumerate(budgets)}
        checks["mfg_vs_lam0_welch"] = {b: {"t": t, "p": pv} for b, (t, pv) in tests.items()}
        print("mfg vs mfg_lam0 (Welch): " + ", ".join(f"B={b} t={t:+.2f} p={pv:.3g}" for b, (t, pv) in tests.items()))
    if "rea" in scores:
        ref = {50: 93.88, 100: 94.09, 150: 94.16, 300: 94.25}
        z = {b: (table[b]["rea"]["mean"] - ref[b]) / (table[b]["rea"]["std"] / math.sqrt(args.seeds))
             for b in budgets if b in ref}
        checks["rea_vs_reference_z"] = z
        if z:
            print("rea vs reference 93.88/94.09/94.16/94.25: z = " + ", ".join(f"{x:+.2f}" for x in z.values()))

    summary = ", ".join(f"B={b}: mfg {table[b]['mfg']['mean']:.2f}" for b in budgets) if "mfg" in scores else ""
    print(f"nb201: {args.seeds} seeds, {len(names)} selectors, {sum(seconds.values()):.0f} s; {summary}")
    if args.json:
        out = {"budgets": {str(b): table[b] for b in budgets}, "rs_expected": {str(b): v for b, v in rs_expected.items()},
               "checks": json.loads(json.dumps(checks)), "seconds": seconds, "settings": vars(args)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
