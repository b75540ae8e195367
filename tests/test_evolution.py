"""The genetic loop: seeding, deduplication, budget, elitism, constraints, and resume after a real kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fastnas.config import SpaceConfig
from fastnas.constraints import ConstraintError, Constraints, TableLatency
from fastnas.evolution import Evolution, StateError
from fastnas.selection import make_selector
from fastnas.spaces.mbconv import MBConvSpace

REPO = Path(__file__).resolve().parents[1]


def small_space() -> MBConvSpace:
    return MBConvSpace(SpaceConfig(resolution=64, num_classes=10, depths=[2, 2, 2, 2, 2, 1]))


def fitness_fn(space):
    """A deterministic fitness: a fixed random additive landscape over (position, choice)."""
    w = np.random.default_rng(123).normal(size=(len(space), space.max_choices))

    def evaluate(archs):
        return [float(w[np.arange(len(a)), list(a)].sum()) for a in archs]
    return evaluate


def run(selector="mfg", **kw):
    space = small_space()
    args = dict(population=12, generations=6, elites=2, seed=0)
    args.update(kw)
    return Evolution(space, fitness_fn(space), make_selector(selector), **args).run()


@pytest.mark.parametrize("selector", ["mfg", "tournament", "truncation", "rea"])
def test_seeded_deduplicated_and_budgeted(selector):
    a, b = run(selector, max_evaluations=50), run(selector, max_evaluations=50)
    assert [c.arch for c in a.history] == [c.arch for c in b.history]
    assert a.best_arch == b.best_arch and a.population == b.population
    archs = [c.arch for c in a.history]
    assert len(archs) == len(set(archs)) == 50            # never re-queried, budget exact
    c = run(selector, max_evaluations=50, seed=1)
    assert [x.arch for x in c.history] != archs


def test_elitism_never_loses_the_best():
    space = small_space()
    best_so_far = []
    evo = Evolution(space, fitness_fn(space), make_selector("random"), population=10, generations=8, elites=1,
                    on_generation=lambda s: best_so_far.append((s.best_fitness, max(evo.fit))))
    evo.run()
    assert all(abs(best - pop_best) < 1e-12 for best, pop_best in best_so_far)


def test_search_improves_over_its_initial_population():
    res = run("mfg", population=16, generations=10)
    initial = [c.fitness for c in res.history if c.generation == 0]
    assert res.best_fitness > max(initial)


def test_progress_callback_reports_each_generation():
    stats = []
    res = run("mfg", on_generation=stats.append)
    assert [s.generation for s in stats] == list(range(7))
    assert stats[0].parent_diversity == 0 and 0 < stats[1].parent_diversity <= 1
    assert stats[-1].evaluations == len(res.history) and stats[-1].best_arch == res.best_arch
    assert all(s.candidates_per_s > 0 for s in stats)


def test_steady_state_aging_keeps_the_population_size():
    space = small_space()
    evo = Evolution(space, fitness_fn(space), make_selector("rea"), population=8, children=1, elites=0,
                    mutation="one_position", crossover_prob=0.0, generations=20)
    res = evo.run()
    assert len(res.population) == 8 and len(res.history) == 8 + 20
    # aging: the survivors are the 8 youngest
    assert sorted(evo.birth) == list(range(20, 28))


def test_one_position_mutation_changes_exactly_one_position():
    space = small_space()
    evo = Evolution(space, fitness_fn(space), make_selector("random"), mutation="one_position")
    arch = space.sample(np.random.default_rng(0))
    for _ in range(50):
        assert sum(x != y for x, y in zip(arch, evo._mutate(arch))) == 1


def test_mac_and_param_bounds_hold_for_every_candidate():
    space = small_space()
    costs = [space.cost(space.sample(np.random.default_rng(s))) for s in range(200)]
    lo, hi = np.percentile([c.macs for c in costs], [30, 70])
    res = run("mfg", constraints=Constraints(min_macs=lo, max_macs=hi, max_params=np.median([c.params for c in costs])))
    for c in res.history:
        cost = space.cost(c.arch)
        assert lo <= cost.macs <= hi
    assert len(res.history) > 20


def test_infeasible_bounds_fail_fast_with_a_clear_error():
    space = small_space()
    macs, _, fixed = space.cost_table()
    smallest = fixed[0] + np.where(macs >= 0, macs, 1 << 60).min(axis=1).sum()
    called = []
    with pytest.raises(ConstraintError, match="smallest"):
        Evolution(space, lambda a: called.append(a) or [0.0] * len(a), make_selector("mfg"),
                  constraints=Constraints(max_macs=smallest - 1))
    assert not called
    with pytest.raises(ConstraintError, match="not a valid range"):
        Constraints(min_macs=2e8, max_macs=1e8)
    with pytest.raises(ConstraintError, match="latency table"):
        Constraints(max_latency_ms=3.0)


def test_latency_table_constraint_by_dict_and_callable():
    space = small_space()
    rng = np.random.default_rng(0)
    table = {(l, c): float(rng.uniform(0.1, 1.0)) for l in range(len(space)) for c in range(space.num_choices[l])}
    lat = TableLatency(table, fixed_ms=1.0)
    fastest = 1.0 + sum(min(table[(l, c)] for c in range(space.num_choices[l])) for l in range(len(space)))
    with pytest.raises(ConstraintError, match="fastest"):
        Evolution(space, fitness_fn(space), make_selector("mfg"),
                  constraints=Constraints(max_latency_ms=fastest - 0.01, latency=lat))
    arch = space.sample(rng)
    assert abs(TableLatency.wrap(table)(arch) + 1.0 - lat(arch)) < 1e-12     # the plain dict form
    budget = fastest + 2.0
    res = run("mfg", constraints=Constraints(max_latency_ms=budget, latency=lat))
    assert all(lat(c.arch) <= budget for c in res.history)
    res2 = run("mfg", constraints=Constraints(max_latency_ms=budget, latency=lambda a: lat(a)))
    assert [c.arch for c in res2.history] == [c.arch for c in res.history]


def test_tight_joint_constraints_that_sampling_cannot_meet_raise():
    space = small_space()
    lat = TableLatency(np.ones((len(space), space.max_choices)), fixed_ms=0.0)
    # each bound alone is feasible, but the feasible set is a sliver random sampling misses
    macs, _, fixed = space.cost_table()
    smallest = fixed[0] + np.where(macs >= 0, macs, 1 << 60).min(axis=1).sum()
    with pytest.raises(ConstraintError, match="relax"):
        run("mfg", max_retries=50, constraints=Constraints(max_macs=smallest + 1, latency=lat, max_latency_ms=100))


def test_resume_with_other_settings_or_a_corrupt_state_is_refused(tmp_path):
    space = small_space()
    state = tmp_path / "state.json"
    Evolution(space, fitness_fn(space), make_selector("mfg"), population=10, generations=2, state_path=state).run()
    with pytest.raises(StateError, match="other settings"):
        Evolution(space, fitness_fn(space), make_selector("mfg"), population=12, generations=4, state_path=state).run()
    state.write_text(state.read_text()[:100])
    with pytest.raises(StateError, match="cannot read"):
        Evolution(space, fitness_fn(space), make_selector("mfg"), population=10, generations=4, state_path=state).run()


SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from fastnas.config import SpaceConfig
    from fastnas.evolution import Evolution
    from fastnas.selection import make_selector
    from fastnas.spaces.mbconv import MBConvSpace

    space = MBConvSpace(SpaceConfig(resolution=64, num_classes=10, depths=[2, 2, 2, 2, 2, 1]))
    w = np.random.default_rng(123).normal(size=(len(space), space.max_choices))
    def evaluate(archs):
        time.sleep(float(sys.argv[2]))
        return [float(w[np.arange(len(a)), list(a)].sum()) for a in archs]
    evo = Evolution(space, evaluate, make_selector("mfg", tau=0.5, lam=2.0), population=12, generations=10,
                    elites=2, seed=7, state_path=sys.argv[1])
    res = evo.run()
    print(repr((res.best_arch, res.best_fitness, res.population, res.fitness,
                [(c.arch, c.fitness, c.generation) for c in res.history])))
""")


def test_resume_after_kill_9_reaches_the_identical_result(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    py = sys.executable
    reference = subprocess.run([py, str(script), str(tmp_path / "ref.json"), "0"], env=env,
                               capture_output=True, text=True, timeout=120, check=True).stdout

    state = tmp_path / "state.json"
    proc = subprocess.Popen([py, str(script), str(state), "0.3"], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:                  # kill mid-search, after a few saved generations
        try:
            if json.loads(state.read_text())["generation"] >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(state.read_text())["generation"]
    assert 3 <= killed_at < 10

    resumed = subprocess.run([py, str(script), str(state), "0"], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
    assert resumed == reference
    assert json.loads(state.read_text())["generation"] == 10


def test_agree_makes_every_rank_search_rank_0s_candidates():
    """Distributed search: each rank runs the loop and `agree` (a broadcast from rank 0) hands it rank 0's
    candidates. A rank whose own loop would draw others (here: another seed) still follows rank 0 exactly."""
    space = small_space()
    drawn = []
    rank0 = Evolution(space, fitness_fn(space), make_selector("mfg"), population=8, generations=4, seed=0,
                      agree=lambda children: drawn.append(list(children)) or children)
    rank1 = Evolution(space, fitness_fn(space), make_selector("mfg"), population=8, generations=4, seed=1,
                      agree=lambda children: drawn[-1])
    while not rank0.done():
        rank0.step()
        rank1.step()
    assert [c.arch for c in rank1.history] == [c.arch for c in rank0.history]
    assert rank1.pop == rank0.pop and rank1.fit == rank0.fit
    alone = Evolution(space, fitness_fn(space), make_selector("mfg"), population=8, generations=4, seed=1).run()
    assert [c.arch for c in alone.history] != [c.arch for c in rank0.history]   # the seeds do differ
