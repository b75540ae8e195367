"""NAS-Bench-201 tabular benchmark of the selection schemes, through the real genetic loop.

The cell space (6 edges x 5 operations, 15,625 architectures) is searched with fastnas.evolution;
the search sees only `--fitness-column` (cifar10valid_valid) and is scored by the `--report-column`
(cifar10_test) of its best-by-fitness architecture after B unique queries. Every GA selector runs
with the same population, mutation, crossover, elitism and budget; `rea` runs at the reference
protocol (population 10, sample size 3, one-edge mutation, steady state) to validate the harness,
and `random` is random search (B distinct architectures), checked against the exact expectation
of best-of-B computed from the table.

`--noise SE[,SE...]` makes the fitness column noisy as a real search sees it (supernet top-1 on a
finite validation set): per seed, every architecture gets one fixed Gaussian draw of standard
deviation SE points (the same architecture queried twice sees the same value, as with a fixed
validation set; every selector of a seed sees the same draws). The report column stays exact, and
the searches are told SE (`Evolution(fitness_se=SE)`), as fastnas.search is told its top-1's.

    python bench/bench_nb201.py --seeds 300 --json runs/nb201.json
    python bench/bench_nb201.py --seeds 300 --noise 0,0.5,1,2 --json runs/nb201_noise.json   # + .png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.cli import cli_entry  # noqa: E402
from fastnas.errors import UserError  # noqa: E402
from fastnas.evolution import Evolution  # noqa: E402
from fastnas.groundtruth import NB201_TABLE, GroundTruth  # noqa: E402
from fastnas.selection import DEFAULT_SPREAD_SHARE, DEFAULT_TARGET_DIVERSITY, make_selector  # noqa: E402

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
    mfg = dict(tau=args.tau, spread_share=args.spread_share)
    target = args.target_diversity if args.target_diversity > 0 else None
    return {
        "mfg": lambda: make_selector("mfg", lam=None if target else args.lam, target_diversity=target, **mfg),
        "mfg_lam0": lambda: make_selector("mfg", lam=0.0, target_diversity=None, **mfg),
        "boltzmann": lambda: make_selector("boltzmann", tau=args.boltzmann_tau),
        "tournament": lambda: make_selector("tournament", k=3),
        "truncation": lambda: make_selector("truncation", top=0.25),
        "random_parents": lambda: make_selector("random"),
        "roulette": lambda: make_selector("roulette"),
        "ranking": lambda: make_selector("ranking"),
        "plus": lambda: make_selector("plus"),
        "sharing": lambda: make_selector("sharing"),
    }


def noisy(fitness: np.ndarray, se: float, seed: int) -> np.ndarray:
    """The fitness column one seed's searches see: one fixed N(0, se^2) draw per architecture."""
    if se == 0:
        return fitness
    return fitness + se * np.random.default_rng([seed, 201]).standard_normal(len(fitness))


def run_search(name, make, space, truth, fitness, seed, budget, args, se: float = 0.0) -> np.ndarray:
    """Rows of the table queried by one search, in query order."""
    def evaluate(archs):
        return fitness[truth.rows(archs)].tolist()

    if name == "rea":
        evo = Evolution(space, evaluate, make_selector("rea", sample_size=3), population=10, children=1, elites=0,
                        mutation="one_position", crossover_prob=0.0, max_evaluations=budget,
                        generations=10 ** 9, seed=seed, fitness_se=se)
    else:
        evo = Evolution(space, evaluate, make(), population=args.population, elites=args.elites,
                        mutation=args.mutation, mutation_prob=args.mutation_prob, crossover=args.crossover,
                        crossover_prob=args.crossover_prob, max_evaluations=budget, generations=10 ** 9, seed=seed,
                        fitness_se=se)
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


CLASSICAL = ("boltzmann", "truncation", "tournament")


def run_level(names, makers, space, truth, fitness, report, budgets, args, se) -> tuple[dict, dict]:
    """Scores (seeds, budgets) of every selector at one noise level, and seconds per selector."""
    scores, seconds = {}, {}
    for name in names:
        t0 = time.perf_counter()
        rows = []
        for seed in range(args.seeds):
            seen = noisy(fitness, se, seed)
            if name == "random":
                q = np.random.default_rng(seed).choice(len(fitness), max(budgets), replace=False)
            else:
                q = run_search(name, makers.get(name), space, truth, seen, seed, max(budgets), args, se)
            rows.append(best_report(q, seen, report, budgets))
        scores[name] = np.array(rows)          # (seeds, budgets)
        seconds[name] = time.perf_counter() - t0
        print(f"  noise {se:g}: {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return scores, seconds


def compare(scores: dict, budgets) -> dict:
    """MFG against each other selector present, per budget: mean difference and Welch's t and p."""
    out = {}
    for other in scores:
        if other == "mfg" or "mfg" not in scores:
            continue
        out[other] = {}
        for j, b in enumerate(budgets):
            t, pv = welch(scores["mfg"][:, j], scores[other][:, j])
            out[other][b] = {"diff": float(scores["mfg"][:, j].mean() - scores[other][:, j].mean()), "t": t, "p": pv}
    return out


def plot(noise_tables: dict, budgets, path: Path, report_column: str) -> None:
    """Mean report-column accuracy vs budget: one panel per noise level, one line per selector."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = list(noise_tables)
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.8), sharey=True, squeeze=False)
    for ax, se in zip(axes[0], levels):
        table = noise_tables[se]
        for name in table[budgets[0]]:
            ys = [table[b][name]["mean"] for b in budgets]
            errs = [table[b][name]["std"] / math.sqrt(table[b][name]["n"]) for b in budgets]
            ax.errorbar(budgets, ys, yerr=errs, marker="o", ms=3, capsize=2, label=name,
                        lw=2.2 if name == "mfg" else 1.2)
        ax.set_title(f"fitness noise SE = {se:g}")
        ax.set_xlabel("queries (budget)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{report_column} of the best found (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(NB201_TABLE))
    p.add_argument("--fitness-column", default="cifar10valid_valid")
    p.add_argument("--report-column", default="cifar10_test")
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--budgets", default="50,100,150,300")
    p.add_argument("--noise", default="0", help="comma list of fitness noise standard errors (points), e.g. 0,0.5,1,2")
    p.add_argument("--selectors", default="mfg,mfg_lam0,rea,random,tournament,truncation,boltzmann",
                   help="comma list; also: random_parents, roulette, ranking, plus, sharing")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--elites", type=int, default=2)
    p.add_argument("--mutation", default="one_position", choices=["one_position", "per_position"])
    p.add_argument("--mutation-prob", type=float, default=1 / EDGES)
    p.add_argument("--crossover", default="uniform", choices=["uniform", "single_point"])
    p.add_argument("--crossover-prob", type=float, default=0.0,
                   help="0: mutation only (measured better on NB201 for MFG and truncation)")
    p.add_argument("--tau", type=float, default=None,
                   help="MFG temperature, fixed (fitness %%); default: the default rule (noise and spread)")
    p.add_argument("--lam", type=float, default=1.0, help="MFG crowding price when --target-diversity is 0")
    p.add_argument("--target-diversity", type=float, default=DEFAULT_TARGET_DIVERSITY,
                   help="MFG: lam per generation for this parent diversity; 0: the fixed --lam")
    p.add_argument("--spread-share", type=float, default=DEFAULT_SPREAD_SHARE,
                   help="MFG default rule: tau = sqrt(SE^2 + (share x robust fitness spread)^2)")
    p.add_argument("--boltzmann-tau", type=float, default=0.5)
    p.add_argument("--quick", action="store_true", help="30 seeds")
    p.add_argument("--json", help="write the table here (and the plot beside it, .png)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = 30
    try:
        budgets = [int(b) for b in args.budgets.split(",")]
        levels = [float(x) for x in args.noise.split(",")]
    except ValueError:
        raise UserError("--budgets takes integers and --noise numbers, comma-separated (e.g. --noise 0,0.5,1)")
    space = nb201_space()
    if args.seeds < 2 or not budgets or min(budgets) < 1 or max(budgets) > space.size:
        raise UserError(f"--seeds must be >= 2 and --budgets positive integers <= {space.size}")
    if any(not (se >= 0 and math.isfinite(se)) for se in levels):
        raise UserError("--noise levels must be finite numbers >= 0")
    truth, fitness, report = load_table(space, Path(args.csv), args.fitness_column, args.report_column)
    makers = ga_selectors(args)
    names = args.selectors.split(",")
    for name in names:
        if name not in makers and name not in ("rea", "random"):
            raise UserError(f"unknown selector {name!r}")

    rs_expected = {b: expected_best_of(fitness, report, b) for b in budgets}
    width = max(len(n) for n in names) + 2
    noise_tables, comparisons, seconds, checks = {}, {}, {}, {}
    for se in levels:
        scores, seconds[se] = run_level(names, makers, space, truth, fitness, report, budgets, args, se)
        table = {b: {n: {"mean": float(s[:, j].mean()), "std": float(s[:, j].std(ddof=1)), "n": int(len(s))}
                     for n, s in scores.items()} for j, b in enumerate(budgets)}
        noise_tables[se], comparisons[se] = table, compare(scores, budgets)
        print(f"NB201 {args.report_column} of best-by-{args.fitness_column} (noise SE {se:g}), "
              f"mean ± std over {args.seeds} seeds")
        print(" " * width + "".join(f"{f'B={b}':>16}" for b in budgets))
        for n in names:
            print(f"{n:<{width}}" + "".join(f"{table[b][n]['mean']:>9.2f} ± {table[b][n]['std']:.2f}" for b in budgets))
        if se == 0:
            print(f"{'rs_expected':<{width}}" + "".join(f"{rs_expected[b]:>16.2f}" for b in budgets))
        for other, per_budget in comparisons[se].items():
            print(f"  mfg - {other:<12}" + "".join(f"{c['diff']:>+8.3f} (p {c['p']:.2g})" for c in per_budget.values()))
        if se == 0 and "random" in scores:
            z = [(table[b]["random"]["mean"] - rs_expected[b]) / (table[b]["random"]["std"] / math.sqrt(args.seeds))
                 for b in budgets]
            checks["random_vs_exact_z"] = {b: float(x) for b, x in zip(budgets, z)}
            checks["random_vs_exact_ok"] = bool(all(abs(x) <= 2 for x in z))
            print("random search vs exact best-of-B: z = " + ", ".join(f"{x:+.2f}" for x in z)
                  + ("  OK" if checks["random_vs_exact_ok"] else "  MISMATCH (|z| > 2)"))
        if se == 0 and "rea" in scores:
            ref = {50: 93.88, 100: 94.09, 150: 94.16, 300: 94.25}
            checks["rea_vs_reference_z"] = {
                b: (table[b]["rea"]["mean"] - ref[b]) / (table[b]["rea"]["std"] / math.sqrt(args.seeds))
                for b in budgets if b in ref}

    total = sum(sum(v.values()) for v in seconds.values())
    print(f"nb201: {args.seeds} seeds, {len(names)} selectors, {len(levels)} noise levels, {total:.0f} s")
    if args.json:
        key = lambda se: f"{se:g}"
        out = {"noise": {key(se): {"budgets": {str(b): noise_tables[se][b] for b in budgets},
                                   "mfg_vs": {o: {str(b): c for b, c in per.items()} for o, per in comparisons[se].items()}}
                         for se in levels},
               "rs_expected": {str(b): v for b, v in rs_expected.items()},
               "checks": json.loads(json.dumps(checks)), "seconds": {key(se): v for se, v in seconds.items()},
               "settings": vars(args)}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        plot(noise_tables, budgets, path.with_suffix(".png"), args.report_column)
        print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
