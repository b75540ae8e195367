"""Selection schemes for the genetic search: who becomes a parent, and who survives.

Every selector answers two questions per generation, on a `Pool` (encodings, fitness, birth order):

  parents(pool, n, rng)         -> n indices into the pool (with repetition): the parents
  survivors(pool, size, elites) -> indices of the members that stay once the children joined

Survival is one of two policies, so steady-state and generational loops share one interface:
  "age"      keep the `elites` fittest, fill up with the youngest. With size - elites children per
             generation this is the generational GA with elitism; with one child and no elites it
             is regularized (aging) evolution, Real et al. 2019.
  "fitness"  keep the fittest (mu + lambda), as truncation / SPOS / OFA populations do.

`MFGSelector` draws parents from the equilibrium of a mean-field game that trades fitness
against crowding (../shared/design/mfg_selection.md); the others are the classic baselines.
Distribution-based selectors draw with stochastic universal sampling (low variance).
Pure NumPy; the selector knows nothing of torch or of the search space.

    sel = make_selector("mfg", tau=0.5, lam=1.0)
    idx = sel.parents(Pool(codes, fitness, birth, n_choices=7), 20, rng)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

SURVIVAL = ("age", "fitness")
# The MFG selector's default rule (see MFGSelector; measured in bench/RESULTS.md, "noisy fitness").
DEFAULT_TARGET_DIVERSITY = 0.2
DEFAULT_SPREAD_SHARE = 0.03


@dataclass
class Pool:
    """The population as arrays: what a selector sees."""

    codes: np.ndarray                       # (N, L) int64 choices
    fitness: np.ndarray                     # (N,) float64, higher is better
    birth: np.ndarray                       # (N,) int64 evaluation order, larger is younger
    n_choices: int                          # max choices at any position
    variance: Optional[np.ndarray] = None   # (N,) fitness noise variance, if known

    def __post_init__(self):
        self.codes = np.ascontiguousarray(self.codes, dtype=np.int64)
        self.fitness = np.asarray(self.fitness, dtype=np.float64)
        self.birth = np.asarray(self.birth, dtype=np.int64)
        if self.codes.ndim != 2 or len(self.codes) != len(self.fitness) or len(self.birth) != len(self.fitness):
            raise ValueError("pool: codes (N, L), fitness (N,) and birth (N,) must agree")
        if len(self.fitness) == 0:
            raise ValueError("pool: empty population")

    def __len__(self) -> int:
        return len(self.fitness)


# ----------------------------------------------------------------------------- helpers

def sus(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stochastic universal sampling: n draws from distribution p with one random offset.

    Each index i is drawn floor(n p_i) or ceil(n p_i) times; the order is shuffled so that
    consecutive parents (crossover pairs) are not neighbours in the population.
    """
    p = np.asarray(p, dtype=np.float64)
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    points = (rng.random() + np.arange(n)) / n
    idx = np.searchsorted(cdf, points, side="right")
    return rng.permutation(np.minimum(idx, len(p) - 1))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


def rank_order(fitness: np.ndarray, birth: np.ndarray) -> np.ndarray:
    """Indices from fittest to least fit; ties go to the older member (deterministic)."""
    return np.lexsort((birth, -fitness))


def survive(policy: str, fitness: np.ndarray, birth: np.ndarray, size: int, elites: int = 0) -> np.ndarray:
    """Indices of the `size` survivors under `policy` ("age" or "fitness"), in birth order."""
    n = len(fitness)
    if size >= n:
        return np.argsort(birth, kind="stable")
    order = rank_order(fitness, birth)
    if policy == "fitness":
        keep = order[:size]
    elif policy == "age":
        keep = list(order[:min(elites, size)])
        chosen = np.zeros(n, bool)
        chosen[keep] = True
        young = [i for i in np.argsort(-birth, kind="stable") if not chosen[i]]
        keep = np.array(keep + young[:size - len(keep)], dtype=np.int64)
    else:
        raise ValueError(f"survival policy {policy!r}: allowed {', '.join(SURVIVAL)}")
    return keep[np.argsort(birth[keep], kind="stable")]


def pairwise_diversity(codes: np.ndarray, n_choices: int) -> float:
    """Mean Hamming share over distinct pairs of rows (i != j) of a multiset, e.g. drawn parents: the
    realised value of `fastnas.mfg.parent_diversity` (1 - p^T K p, its expectation for independent draws)."""
    codes = np.asarray(codes, dtype=np.int64)
    n, L = codes.shape
    if n < 2:
        return 0.0
    equal_pairs = sum(int((np.bincount(codes[:, l], minlength=n_choices) ** 2).sum()) for l in range(L)) - n * L
    return 1.0 - equal_pairs / (L * n * (n - 1))


# ----------------------------------------------------------------------------- the interface

class Selector:
    """Base class: parent selection plus a survival policy ("age" or "fitness")."""

    name = "selector"

    def __init__(self, survival: str = "age"):
        if survival not in SURVIVAL:
            raise ValueError(f"survival {survival!r}: allowed {', '.join(SURVIVAL)}")
        self.survival = survival

    def probabilities(self, pool: Pool) -> np.ndarray:
        """Selection distribution over the pool, for distribution-based selectors."""
        raise NotImplementedError

    def parents(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        return sus(self.probabilities(pool), n, rng)

    def survivors(self, pool: Pool, size: int, elites: int = 0) -> np.ndarray:
        return survive(self.survival, pool.fitness, pool.birth, size, elites)

    # Selectors with memory (warm starts) save and restore it with the search state.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        # settings only: private and last_* attributes are run-time state
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith(("_", "last_")))
        return f"{type(self).__name__}({args})"


class RandomSelector(Selector):
    """Uniform parents: the no-selection baseline (variation and survival only)."""

    name = "random"

    def probabilities(self, pool):
        return np.full(len(pool), 1.0 / len(pool))

    def parents(self, pool, n, rng):
        return rng.integers(len(pool), size=n)


class RouletteSelector(Selector):
    """Fitness-proportional on windowed fitness f - min f (Goldberg), drawn by SUS."""

    name = "roulette"

    def probabilities(self, pool):
        w = pool.fitness - pool.fitness.min()
        total = w.sum()
        return w / total if total > 0 else np.full(len(pool), 1.0 / len(pool))


class BoltzmannSelector(Selector):
    """p = softmax(f / tau): the MFG selector with lam = 0."""

    name = "boltzmann"

    def __init__(self, tau: float = 0.5, survival: str = "age"):
        super().__init__(survival)
        if not tau > 0:
            raise ValueError("boltzmann: tau must be > 0")
        self.tau = float(tau)

    def probabilities(self, pool):
        return softmax(pool.fitness / self.tau)


class LinearRankingSelector(Selector):
    """Linear ranking (Baker): p from rank, the best gets `pressure` / N, the worst (2 - pressure) / N."""

    name = "ranking"

    def __init__(self, pressure: float = 1.8, survival: str = "age"):
        super().__init__(survival)
        if not 1.0 <= pressure <= 2.0:
            raise ValueError("ranking: pressure must be in [1, 2]")
        self.pressure = float(pressure)

    def probabilities(self, pool):
        n = len(pool)
        if n == 1:
            return np.ones(1)
        rank = np.empty(n)
        rank[rank_order(pool.fitness, pool.birth)] = np.arange(n)[::-1]     # 0 = worst, n-1 = best
        s = self.pressure
        return (2 - s + 2 * (s - 1) * rank / (n - 1)) / n


class TournamentSelector(Selector):
    """Each parent is the fittest of k members drawn without replacement."""

    name = "tournament"

    def __init__(self, k: int = 3, survival: str = "age"):
        super().__init__(survival)
        if int(k) < 1:
            raise ValueError("tournament: k must be >= 1")
        self.k = int(k)

    def parents(self, pool, n, rng):
        k = min(self.k, len(pool))
        # k distinct members per tournament: the k smallest of N uniform keys per row.
        contestants = np.argsort(rng.random((n, len(pool))), axis=1)[:, :k]
        f = pool.fitness[contestants]
        # ties: the first drawn wins (argmax returns the first maximum)
        return contestants[np.arange(n), np.argmax(f, axis=1)]


class RegularizedEvolution(TournamentSelector):
    """Regularized (aging) evolution, Real et al. 2019: tournament of `sample_size` for each parent,
    and the oldest member dies. Run it steady-state: one child per generation and no elites
    (Evolution(children=1, elites=0)); with larger batches it is the batched variant."""

    name = "rea"

    def __init__(self, sample_size: int = 3):
        super().__init__(k=sample_size, survival="age")


class TruncationSelector(Selector):
    """Parents uniform among the `top` fittest (a count, or a share of the pool if < 1);
    survival keeps the fittest, as the SPOS / OFA / mmrazor evolution loops do."""

    name = "truncation"

    def __init__(self, top: float = 0.25, survival: str = "fitness"):
        super().__init__(survival)
        if not top > 0:
            raise ValueError("truncation: top must be > 0")
        self.top = top

    def _k(self, n: int) -> int:
        k = int(round(self.top * n)) if self.top < 1 else int(self.top)
        return max(1, min(n, k))

    def probabilities(self, pool):
        p = np.zeros(len(pool))
        p[rank_order(pool.fitness, pool.birth)[:self._k(len(pool))]] = 1.0
        return p / p.sum()

    def parents(self, pool, n, rng):
        best = rank_order(pool.fitness, pool.birth)[:self._k(len(pool))]
        return best[rng.integers(len(best), size=n)]


class PlusSelector(RandomSelector):
    """(mu + lambda): uniform parents, the mu fittest of parents and children survive."""

    name = "plus"

    def __init__(self):
        super().__init__(survival="fitness")


class FitnessSharingSelector(Selector):
    """Fitness sharing (Goldberg & Richardson 1987): windowed fitness divided by the niche count
    m_i = sum_j max(0, 1 - (d_ij / sigma)^alpha), d the Hamming share; drawn by SUS. O(N^2 L)."""

    name = "sharing"

    def __init__(self, sigma: float = 0.5, alpha: float = 1.0, survival: str = "age"):
        super().__init__(survival)
        if not 0 < sigma <= 1:
            raise ValueError("sharing: sigma (a share of positions) must be in (0, 1]")
        self.sigma, self.alpha = float(sigma), float(alpha)

    def probabilities(self, pool):
        codes = pool.codes
        d = (codes[:, None, :] != codes[None, :, :]).mean(axis=2)
        niche = np.clip(1.0 - (d / self.sigma) ** self.alpha, 0.0, None).sum(axis=1)
        f = pool.fitness - pool.fitness.min()
        f = f + (f.max() * 1e-3 if f.max() > 0 else 1.0)      # the worst keeps a little mass
        w = f / niche
        return w / w.sum()


class MFGSelector(Selector):
    """Parents from the mean-field-game equilibrium p* = G(p*) of `fastnas.mfg`,
    G(p)_i ~ nu_i exp((g_i - lam (K p)_i) / tau), K the share of equal choices, nu ~ 1/multiplicity,
    g the effective fitness (f less its noise variance / 2 tau when the pool knows the variance).

    The default rule (no tau, lam or target_diversity given) needs no tuning per dataset: each generation
    tau = `fastnas.mfg.auto_temperature` (the fitness noise and `spread_share` of the pool's robust
    spread) and lam = the smallest price that keeps parent diversity 1 - p*^T K p* >= target_diversity
    (`fastnas.mfg.lam_for_diversity`, capped at LAM_CAP tau; 0 when Boltzmann selection is diverse enough).
    Fixed settings: tau in fitness units (top-1 %); lam a fixed crowding price (0 is Boltzmann
    selection); with target_diversity given, lam is only the first bisection's starting guess.
    Warm start: the previous generation's p*, matched by encoding (`fastnas.mfg.warm_start`; saved in
    state_dict). This class only adapts a `Pool` to `fastnas.mfg`: every rule lives there.
    """

    name = "mfg"

    def __init__(self, tau: Optional[float] = None, lam: Optional[float] = None,
                 target_diversity: Optional[float] = None, spread_share: float = DEFAULT_SPREAD_SHARE,
                 tol: float = 1e-10, survival: str = "age"):
        super().__init__(survival)
        if tau is not None and not tau > 0:
            raise ValueError("mfg: tau must be > 0 (or None for the default rule)")
        if lam is not None and not lam >= 0:
            raise ValueError("mfg: lam must be >= 0")
        if lam is None and target_diversity is None:       # neither given: the default rule
            target_diversity = DEFAULT_TARGET_DIVERSITY
        lam = 1.0 if lam is None else lam
        if target_diversity is not None and not 0 <= target_diversity < 1:
            raise ValueError("mfg: target_diversity must be in [0, 1)")
        if not spread_share > 0:
            raise ValueError("mfg: spread_share must be > 0")
        self.tau, self.lam, self.target_diversity = tau, float(lam), target_diversity
        self.spread_share, self.tol = float(spread_share), float(tol)
        self._prev_codes: Optional[np.ndarray] = None     # last generation's pool and p*: the warm start
        self._prev_p: Optional[np.ndarray] = None
        self.last_tau = tau                      # tau and lam of the last solve (after the rule / bisection)
        self.last_lam = self.lam
        self.last_iters = 0

    def probabilities(self, pool):
        from fastnas import mfg   # numba; imported when first needed
        tau = self.tau if self.tau is not None else mfg.auto_temperature(pool.fitness, pool.variance,
                                                                          self.spread_share)
        g = mfg.effective_fitness(pool.fitness, pool.variance, tau)
        p0 = None if self._prev_codes is None else mfg.warm_start(self._prev_codes, self._prev_p, pool.codes)
        common = dict(n_choices=pool.n_choices, tau=tau, log_nu=mfg.reference_measure(pool.codes), p0=p0,
                      tol=self.tol * tau)
        if self.target_diversity is None:
            lam, eq = self.lam, mfg.solve_equilibrium(pool.codes, g, lam=self.lam, **common)
        else:
            # the previous generation's lam / tau starts the bracket: the price moves slowly in tau's units
            start = self.last_lam / self.last_tau * tau if self.last_tau and self.last_lam else None
            lam, eq = mfg.lam_for_diversity(pool.codes, g, target=self.target_diversity, lam_start=start, **common)
        self.last_tau, self.last_lam, self.last_iters = tau, lam, int(eq.iters)
        self._prev_codes, self._prev_p = pool.codes.copy(), np.asarray(eq.p, dtype=np.float64)
        return self._prev_p

    def state_dict(self) -> dict:
        state = {"last_lam": self.last_lam, "last_tau": self.last_tau}
        if self._prev_codes is not None:
            state.update(codes=self._prev_codes.tolist(), p=self._prev_p.tolist())
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("codes"):
            self._prev_codes = np.asarray(state["codes"], dtype=np.int64)
            self._prev_p = np.asarray(state["p"], dtype=np.float64)
        self.last_lam = float(state.get("last_lam", self.lam))
        self.last_tau = state.get("last_tau", self.tau)


SELECTORS = {cls.name: cls for cls in (MFGSelector, RandomSelector, RouletteSelector, BoltzmannSelector,
                                       LinearRankingSelector, TournamentSelector, TruncationSelector,
                                       PlusSelector, RegularizedEvolution, FitnessSharingSelector)}


def make_selector(name: str, **kwargs) -> Selector:
    """Factory front door: make_selector("tournament", k=3). Unknown names raise ValueError."""
    if name not in SELECTORS:
        raise ValueError(f"selector {name!r}: allowed {', '.join(sorted(SELECTORS))}")
    return SELECTORS[name](**kwargs)
