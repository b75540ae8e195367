"""The genetic loop: population, variation, constraints (`fastnas.constraints`), deduplication,
elitism, resumable state.

Works over any space object with `sample(rng)`, `mutate(arch, rng, prob)`, `crossover(a, b, rng, mode)`,
`validate(arch)` and `num_choices` (an (L,) array); MACs/params constraints also need
`cost(arch)` and `cost_table()` (every `fastnas.spaces.Space` has all of them).

One generation:
  1. the selector draws 2 x children parents from the population (fastnas.selection);
  2. each child is a crossover of a pair (with probability crossover_prob) or a copy of the first,
     then mutated; a child that breaks a constraint or was already evaluated is rejected and
     re-drawn (from the drawn parents up to 40 times, then from random samples), up to max_retries
     times in all;
  3. `evaluate(children) -> fitness` (higher is better) scores them; nothing is ever queried twice;
  4. the selector's survival policy picks the next population (elites are always kept).
The state (population, fitness, history, RNG, selector memory) is written atomically after each
generation; a search restarted with the same settings continues from it and reaches exactly
the same result as an uninterrupted one.

    evo = Evolution(space, evaluate, make_selector("mfg"), population=50, generations=20,
                    state_path="runs/search/state.json", on_generation=print)
    result = evo.run()          # result.best_arch, result.best_fitness, result.history
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fastnas.atomic import write_json_atomic
from fastnas.constraints import ConstraintError, Constraints
from fastnas.errors import UserError
from fastnas.selection import Pool, Selector, pairwise_diversity

Arch = tuple[int, ...]
STATE_FORMAT = "fastnas-evolution/1"
PARENT_TRIES = 40        # children tried from the drawn parents before a fresh random sample


class StateError(UserError):
    """A search state file that cannot be resumed (corrupt, or written by different settings)."""


# ----------------------------------------------------------------------------- results

@dataclass
class Candidate:
    arch: Arch
    fitness: float
    generation: int           # 0 = initial population


@dataclass
class GenerationStats:
    """What a progress callback receives after each generation."""

    generation: int
    evaluations: int          # unique architectures evaluated so far
    children: int             # evaluated in this generation
    best_fitness: float
    best_arch: Arch
    mean_fitness: float       # of the population after survival
    parent_diversity: float   # mean Hamming share between distinct drawn parents (0 for generation 0)
    candidates_per_s: float   # this generation's evaluations per second of wall time
    seconds: float


@dataclass
class SearchResult:
    best_arch: Arch
    best_fitness: float
    population: list[Arch]
    fitness: list[float]
    history: list[Candidate] = field(default_factory=list)
    generations: int = 0


# ----------------------------------------------------------------------------- the loop

class Evolution:
    """A seeded, resumable genetic search. See the module docstring for one generation's steps.

    population      size of the population that survives each generation
    generations     generations after the initial one (stops earlier at max_evaluations)
    max_evaluations budget of unique architectures, initial population included (None: no cap)
    children        children per generation (default population - elites: the generational GA;
                    1 with elites=0 and RegularizedEvolution is steady-state aging evolution)
    mutation        "per_position" (each position resampled with mutation_prob, via space.mutate)
                    or "one_position" (exactly one position changes, e.g. NB201's one-edge mutation)
    crossover       "uniform" or "single_point", applied with crossover_prob
    """

    def __init__(self, space, evaluate: Callable[[list[Arch]], Sequence[float]], selector: Selector, *,
                 population: int = 50, generations: int = 20, max_evaluations: Optional[int] = None,
                 children: Optional[int] = None, elites: int = 2,
                 mutation: str = "per_position", mutation_prob: float = 0.1,
                 crossover: str = "uniform", crossover_prob: float = 0.5,
                 constraints: Optional[Constraints] = None, max_retries: int = 1000, seed: int = 0,
                 state_path: Optional[str | os.PathLike] = None, resume: bool = True, save_state: bool = True,
                 on_generation: Optional[Callable[[GenerationStats], None]] = None,
                 fitness_se: float | Callable[[], float] = 0.0, fitness_definition: Optional[dict] = None,
                 agree: Optional[Callable[[list], list]] = None):
        if population < 1:
            raise ValueError("population must be >= 1")
        if not 0 <= elites < population:
            raise ValueError("elites must be in [0, population)")
        if mutation not in ("per_position", "one_position"):
            raise ValueError(f"mutation {mutation!r}: allowed per_position, one_position")
        if crossover not in ("uniform", "single_point"):
            raise ValueError(f"crossover {crossover!r}: allowed uniform, single_point")
        self.space, self.evaluate, self.selector = space, evaluate, selector
        # What the fitness values depend on (weights, data, eval settings): resume settings like the rest.
        self.fitness_definition = fitness_definition or {}
        # Distributed search: every rank runs this loop, and `agree` (a broadcast from rank 0) makes
        # their candidates rank 0's, so float differences in selection can never split the ranks.
        self.agree = agree
        # Standard error of one fitness value (or a function giving the current estimate): noise-aware
        # selectors (MFG) see its square as the pool's variance.
        self.fitness_se = fitness_se if callable(fitness_se) else float(fitness_se)
        self.population_size, self.generations = int(population), int(generations)
        self.max_evaluations = max_evaluations
        self.elites = int(elites)
        self.children = int(children) if children else max(1, self.population_size - self.elites)
        self.mutation, self.mutation_prob = mutation, float(mutation_prob)
        self.crossover, self.crossover_prob = crossover, float(crossover_prob)
        self.constraints = constraints or Constraints()
        self.max_retries = int(max_retries)
        self.seed = int(seed)
        self.state_path = Path(state_path) if state_path else None
        self.resume = resume
        self.save_state = save_state          # False on all but one rank of a distributed search: one writer
        self.on_generation = on_generation
        self.num_choices = np.asarray(space.num_choices, dtype=np.int64)
        self.n_choices = int(self.num_choices.max())
        self._choices = self.num_choices.tolist()
        self._mutable = [i for i, n in enumerate(self._choices) if n > 1]
        self.constraints.check_space(space)

        self.rng = np.random.default_rng(self.seed)
        self.generation = -1                  # last completed generation
        self.pop: list[Arch] = []
        self.fit: list[float] = []
        self.birth: list[int] = []
        self.history: list[Candidate] = []
        self.seen: dict[Arch, float] = {}
        self.best: Optional[Candidate] = None
        self.exhausted = False

    # ------------------------------------------------------------------ settings that must match on resume
    def settings(self) -> dict:
        return {"population": self.population_size, "children": self.children, "elites": self.elites,
                "mutation": self.mutation, "mutation_prob": self.mutation_prob, "crossover": self.crossover,
                "crossover_prob": self.crossover_prob, "max_retries": self.max_retries, "seed": self.seed,
                "selector": repr(self.selector), "num_choices": self.num_choices.tolist(),
                "constraints": [self.constraints.min_macs, self.constraints.max_macs, self.constraints.min_params,
                                self.constraints.max_params, self.constraints.max_latency_ms],
                **{f"fitness.{k}": v for k, v in self.fitness_definition.items()}}

    # ------------------------------------------------------------------ variation
    def _mutate(self, arch: Arch) -> Arch:
        if self.mutation == "per_position":
            return tuple(int(c) for c in self.space.mutate(arch, self.rng, self.mutation_prob))
        positions = self._mutable
        if len(positions) == 0:
            return arch
        u = self.rng.random(2)                         # one call: position, then the new choice
        i = positions[int(u[0] * len(positions))]
        c = int(u[1] * (self._choices[i] - 1))
        out = list(arch)
        out[i] = c + (c >= arch[i])
        return tuple(out)

    def _acceptable(self, arch: Arch, batch: set) -> bool:
        return arch not in self.seen and arch not in batch and (
            not self.constraints.active or self.constraints.ok(self.space, arch))

    def _sample_new(self, batch: set, tries: int) -> Optional[Arch]:
        for _ in range(tries):
            arch = tuple(int(c) for c in self.space.validate(self.space.sample(self.rng)))
            if self._acceptable(arch, batch):
                return arch
        return None

    def _initial(self) -> list[Arch]:
        archs: list[Arch] = []
        batch: set = set()
        n = self._budgeted(self.population_size)
        for _ in range(n):
            arch = self._sample_new(batch, self.max_retries)
            if arch is None:
                if not archs and self.constraints.active:
                    raise ConstraintError(f"no architecture satisfying the constraints was found in "
                                          f"{self.max_retries} random samples; relax the bounds")
                break
            archs.append(arch)
            batch.add(arch)
        return archs

    def _offspring(self, parents: np.ndarray) -> list[Arch]:
        """One child per parent pair; rejected children are re-drawn (see module docstring)."""
        n = len(parents) // 2
        n = self._budgeted(n)
        children: list[Arch] = []
        batch: set = set()
        from_parents = max(1, min(self.max_retries // 2, PARENT_TRIES))
        for k in range(n):
            a, b = self.pop[parents[2 * k]], self.pop[parents[2 * k + 1]]
            child = None
            for attempt in range(from_parents):
                if attempt and attempt % 5 == 0:       # stuck parents: another pair of the drawn ones
                    a = self.pop[parents[self.rng.integers(len(parents))]]
                    b = self.pop[parents[self.rng.integers(len(parents))]]
                x = a
                if self.crossover_prob > 0 and self.rng.random() < self.crossover_prob:
                    x = tuple(int(c) for c in self.space.crossover(a, b, self.rng, mode=self.crossover))
                x = self._mutate(x)
                if self._acceptable(x, batch):
                    child = x
                    break
            if child is None:                           # the parents' neighbourhood is used up
                child = self._sample_new(batch, self.max_retries - from_parents)
            if child is None:
                break
            children.append(child)
            batch.add(child)
        return children

    def _budgeted(self, n: int) -> int:
        if self.max_evaluations is None:
            return n
        return max(0, min(n, self.max_evaluations - len(self.seen)))

    # ------------------------------------------------------------------ evaluation and survival
    def _score(self, archs: list[Arch], generation: int) -> list[float]:
        if not archs:
            return []
        fitness = [float(f) for f in self.evaluate(list(archs))]
        if len(fitness) != len(archs):
            raise ValueError(f"evaluate returned {len(fitness)} fitness values for {len(archs)} architectures")
        if not all(math.isfinite(f) for f in fitness):
            raise ValueError("evaluate returned a non-finite fitness")
        for arch, f in zip(archs, fitness):
            cand = Candidate(arch, f, generation)
            self.history.append(cand)
            self.seen[arch] = f
            if self.best is None or f > self.best.fitness:
                self.best = cand
        return fitness

    def _agreed(self, children: list[Arch]) -> list[Arch]:
        return children if self.agree is None else [tuple(a) for a in self.agree(children)]

    def _pool(self, codes=None, fitness=None, birth=None) -> Pool:
        fitness = np.array(self.fit if fitness is None else fitness)
        se = self.fitness_se() if callable(self.fitness_se) else self.fitness_se
        variance = np.full(len(fitness), se ** 2) if se > 0 else None
        return Pool(np.array(self.pop if codes is None else codes, dtype=np.int64), fitness,
                    np.array(self.birth if birth is None else birth), self.n_choices, variance)

    def step(self) -> GenerationStats:
        """Run one generation (the initial population first) and save the state."""
        t0 = time.perf_counter()
        diversity = 0.0
        if self.generation < 0:
            children = self._agreed(self._initial())
            fitness = self._score(children, 0)
            first = len(self.history) - len(children)
            self.pop, self.fit = list(children), fitness
            self.birth = list(range(first, first + len(children)))
        else:
            g = self.generation + 1
            pool = self._pool()
            parents = np.asarray(self.selector.parents(pool, 2 * self.children, self.rng), dtype=np.int64)
            diversity = pairwise_diversity(pool.codes[parents], self.n_choices)
            children = self._agreed(self._offspring(parents))
            if not children:
                self.exhausted = True
            first = len(self.history)
            fitness = self._score(children, g)
            merged = self._pool(self.pop + children, self.fit + fitness,
                                self.birth + list(range(first, first + len(children))))
            keep = self.selector.survivors(merged, self.population_size, self.elites)
            everyone, scores, births = self.pop + children, self.fit + fitness, merged.birth.tolist()
            self.pop = [everyone[i] for i in keep]
            self.fit = [scores[i] for i in keep]
            self.birth = [births[i] for i in keep]
        self.generation += 1
        seconds = time.perf_counter() - t0
        self.save()
        stats = GenerationStats(self.generation, len(self.seen), len(children), self.best.fitness, self.best.arch,
                                float(np.mean(self.fit)), diversity,
                                len(children) / seconds if seconds > 0 else float("inf"), seconds)
        if self.on_generation is not None:
            self.on_generation(stats)
        return stats

    def done(self) -> bool:
        return (self.exhausted or self.generation >= self.generations
                or (self.max_evaluations is not None and len(self.seen) >= self.max_evaluations)
                or (self.generation >= 0 and not self.pop))

    def run(self) -> SearchResult:
        if self.generation < 0 and self.resume and self.state_path is not None and self.state_path.exists():
            self.load()
        while not self.done():
            self.step()
        if self.best is None:
            raise ConstraintError("the search evaluated no architecture")
        return self.result()

    def result(self) -> SearchResult:
        return SearchResult(self.best.arch, self.best.fitness, list(self.pop), list(self.fit),
                            list(self.history), self.generation)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "settings": self.settings(), "generation": self.generation,
                "exhausted": self.exhausted,
                "population": [list(a) for a in self.pop], "fitness": self.fit, "birth": self.birth,
                "history": [[list(c.arch), c.fitness, c.generation] for c in self.history],
                "rng": self.rng.bit_generator.state, "selector": self.selector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        where = self.state_path or "search state"
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise StateError(f"{where}: not a fastnas search state")
        ours = json.loads(json.dumps(self.settings()))
        theirs = state["settings"]
        if theirs != ours:
            diff = sorted(k for k in set(ours) | set(theirs) if theirs.get(k) != ours.get(k))
            raise StateError(f"{where}: written by a search with other settings ({', '.join(diff)}); start "
                             f"afresh with --fresh, point --out elsewhere, or use the same settings")
        self.generation = int(state["generation"])
        self.exhausted = bool(state.get("exhausted", False))
        self.pop = [tuple(a) for a in state["population"]]
        self.fit = [float(f) for f in state["fitness"]]
        self.birth = [int(b) for b in state["birth"]]
        self.history, self.seen, self.best = [], {}, None
        for arch, f, g in state["history"]:
            cand = Candidate(tuple(arch), float(f), int(g))
            self.history.append(cand)
            self.seen[cand.arch] = cand.fitness
            if self.best is None or cand.fitness > self.best.fitness:
                self.best = cand
        self.rng.bit_generator.state = state["rng"]
        self.selector.load_state_dict(state["selector"])

    def save(self) -> None:
        if self.state_path is not None and self.save_state:
            write_json_atomic(self.state_path, self.state_dict())

    def load(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as e:
            raise StateError(f"{self.state_path}: cannot read the search state ({e.__class__.__name__}); "
                             f"delete it to start afresh") from None
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"{self.state_path}: incomplete search state ({e}); delete it to start afresh") from None


