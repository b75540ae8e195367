"""Mean-field-game selection equilibrium: the front door to the compiled solver.

A continuum of offspring slots each picks a parent i, paying u_i(p) = g_i - lam (K p)_i where
K_ij is the share of equal choices of i and j; the selection distribution is the equilibrium
p* = G(p*), G(p) = softmax(log nu + u(p) / tau), the unique maximiser of
Phi(p) = g.p - (lam/2) p^T K p - tau KL(p || nu). Specification: ../shared/design/mfg_selection.md.

    eq = solve_equilibrium(codes, g, n_choices=7, tau=0.5, lam=2.0)
    eq.p, eq.iters, eq.exploitability
    lam, eq = lam_for_diversity(codes, g, n_choices=7, tau=0.5, target=0.3)
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fastnas.errors import UserError
from fastnas.kernels import mfg as _kernels


_NO_MATRIX = np.zeros((0, 0))  # kernel argument: no dense similarity, use the histograms
_NO_START = np.zeros(0)  # kernel argument: cold start
# lam / tau never exceeds this in lam_for_diversity: beyond it the crowding price outweighs any fitness
# difference up to 1000 tau, i.e. p* is already the population's most diverse selection.
LAM_CAP = 1e3


class EquilibriumInputError(UserError, ValueError):
    """Invalid input to the equilibrium solver (shapes, ranges, tau <= 0, lam < 0)."""


class NonUniqueEquilibriumWarning(RuntimeWarning):
    """The similarity is indefinite enough that the equilibrium may not be unique."""


class EquilibriumConvergenceWarning(RuntimeWarning):
    """max_iter was reached before the exploitability fell to tol."""


@dataclass(frozen=True)
class Equilibrium:
    p: np.ndarray          # selection distribution over the N candidates
    iters: int             # fixed-point steps taken
    exploitability: float  # tau KL(p || G(p)) >= Phi(p*) - Phi(p)


def reference_measure(codes: np.ndarray) -> np.ndarray:
    """log nu with nu_i proportional to 1 / multiplicity_i: exact duplicates share one unit of mass."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise EquilibriumInputError(f"codes must be a 2-D array (N, L), got shape {codes.shape}")
    return _encode(codes, codes.max(axis=0) + 1)[2]


def effective_fitness(f: np.ndarray, var: np.ndarray | None, tau: float) -> np.ndarray:
    """g = f - s^2 / (2 tau): keeps exp(g / tau) an unbiased estimate of exp(f / tau) under Gaussian noise."""
    f = np.asarray(f, dtype=np.float64)
    return f.copy() if var is None else f - np.asarray(var, dtype=np.float64) / (2.0 * tau)


def parent_diversity(codes: np.ndarray, p: np.ndarray, n_choices: int | Sequence[int]) -> float:
    """Share of positions at which two parents drawn independently from p differ: 1 - p^T K p.

    The one diversity unit of fastnas (selection, the search's progress line, its state, README):
    0 when every parent is the same architecture, at most 1 - 1/C with C choices per position.
    """
    idx, offsets = _bin_index(np.asarray(codes), n_choices)
    hist = np.bincount(idx.ravel(), weights=np.repeat(np.asarray(p, np.float64), idx.shape[1]),
                       minlength=int(offsets[-1]))
    return float(1.0 - np.dot(hist, hist) / idx.shape[1])  # p^T K p = |hist|^2 / L


def auto_temperature(f: np.ndarray, variance: np.ndarray | None, spread_share: float) -> float:
    """The default rule's tau: sqrt(noise variance + (spread_share x the pool's fitness spread)^2).

    Noise: the mean of the fitness variances the search knows (a top-1's binomial standard error
    squared; 0 for an exact table): selection sharper than the noise chases lucky draws. Spread: the
    median absolute deviation (x 1.4826, a standard deviation for Gaussian data): robust to the few
    collapsed architectures of a random population that make its standard deviation large early on.
    Fitness units in, fitness units out, so it carries over between datasets and fitness scales.
    """
    f = np.asarray(f, dtype=np.float64)
    noise = float(np.mean(variance)) if variance is not None else 0.0
    spread = 1.4826 * float(np.median(np.abs(f - np.median(f))))
    if spread == 0.0:
        spread = float(np.std(f))
    tau = math.sqrt(noise + (spread_share * spread) ** 2)
    return tau if tau > 0 else 1.0


def warm_start(prev_codes: np.ndarray, prev_p: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """Carry the previous equilibrium's mass to the new population by encoding.

    Each encoding keeps its previous total mass, split over its copies in the new population;
    new encodings get 0 (the solver starts with one step p <- G(p0), which fills them in).
    Returns None when no encoding survived (cold start).
    """
    prev_codes, codes = np.asarray(prev_codes), np.asarray(codes)
    if prev_codes.ndim != 2 or codes.ndim != 2 or prev_codes.shape[1] != codes.shape[1]:
        return None
    mass: dict[bytes, float] = {}
    for row, m in zip(np.ascontiguousarray(prev_codes, np.int64), np.asarray(prev_p, np.float64)):
        key = row.tobytes()
        mass[key] = mass.get(key, 0.0) + float(m)
    keys = [row.tobytes() for row in np.ascontiguousarray(codes, np.int64)]
    copies: dict[bytes, int] = {}
    for key in keys:
        copies[key] = copies.get(key, 0) + 1
    p0 = np.array([mass.get(key, 0.0) / copies[key] for key in keys])
    return p0 / p0.sum() if p0.sum() > 0 else None


def solve_equilibrium(codes: np.ndarray | None, g: np.ndarray, *, n_choices: int | Sequence[int],
                      tau: float, lam: float, log_nu: np.ndarray | None = None,
                      p0: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 100000,
                      similarity: np.ndarray | None = None, fast: bool = True) -> Equilibrium:
    """Selection equilibrium p* of the population `codes` (N, L) with fitness g (N,).

    n_choices: choices per layer (one int for all layers, or one per layer). log_nu defaults to
    `reference_measure(codes)`; p0 (e.g. from `warm_start`) defaults to softmax(log nu + g / tau).
    `similarity`: optional dense (N, N) similarity replacing the share-of-equal-choices K (codes may
    then be None); an indefinite one with lam |lambda_min| >= tau warns (uniqueness is lost).
    fast=False keeps the safe log-damped iteration throughout.
    Stops when the exploitability E(p) <= tol (then Phi(p*) - Phi(p) <= E and, Phi being tau-strongly
    concave in L1, |p - p*|_1 <= sqrt(2 tol / tau)); tol < 0 runs exactly max_iter steps. Zeros in p0
    are fine (the first step is then p <- G(p0)); warns when max_iter ends the solve first.
    """
    g = np.ascontiguousarray(g, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise EquilibriumInputError(f"fitness must be a non-empty 1-D array, got shape {g.shape}")
    n = g.size
    if not np.all(np.isfinite(g)):
        raise EquilibriumInputError("fitness contains NaN or infinite values")
    if not (np.isfinite(tau) and tau > 0):
        raise EquilibriumInputError(f"tau must be a positive number, got {tau}")
    if not (np.isfinite(lam) and lam >= 0):
        raise EquilibriumInputError(f"lam must be a non-negative number, got {lam}")

    if similarity is None:
        if codes is None:
            raise EquilibriumInputError("codes are required unless a dense similarity is given")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != n:
            raise EquilibriumInputError(f"codes must have shape ({n}, L), got {codes.shape}")
        idx, offsets, prior = _encode(codes, n_choices)
        dense_k = _NO_MATRIX
        max_k = 1.0  # K_ii = 1 is the largest entry
    else:
        dense_k = np.ascontiguousarray(similarity, dtype=np.float64)
        if dense_k.shape != (n, n) or not np.all(np.isfinite(dense_k)):
            raise EquilibriumInputError(f"similarity must be a finite ({n}, {n}) matrix, got {dense_k.shape}")
        if not np.allclose(dense_k, dense_k.T, rtol=0.0, atol=1e-12 * max(1.0, np.abs(dense_k).max())):
            raise EquilibriumInputError("similarity must be symmetric")
        lam_min = float(np.linalg.eigvalsh(dense_k)[0])
        if lam_min < 0 and lam * -lam_min >= tau:
            warnings.warn(f"similarity is indefinite (lambda_min = {lam_min:.3g}) and lam |lambda_min| = "
                          f"{lam * -lam_min:.3g} >= tau = {tau:.3g}: the equilibrium may not be unique",
                          NonUniqueEquilibriumWarning, stacklevel=2)
        fast = fast and lam_min >= -1e-12 * max(1.0, np.abs(dense_k).max())  # rate bound needs K PSD
        idx, offsets = np.zeros((n, 0), np.int32), np.zeros(1, np.int64)
        max_k = float(np.abs(dense_k).max())
        prior = reference_measure(codes) if codes is not None else np.full(n, -np.log(n))

    if log_nu is None:
        log_nu = prior
    else:
        log_nu = np.ascontiguousarray(log_nu, dtype=np.float64)
        if log_nu.shape != (n,) or np.isnan(log_nu).any() or not np.isfinite(log_nu).any():
            raise EquilibriumInputError("log_nu must be a (N,) array with at least one finite entry")
    if p0 is None:
        p0 = _NO_START  # the kernel starts from softmax(log nu + g / tau)
    else:
        p0 = np.array(p0, dtype=np.float64)
        if p0.shape != (n,) or not np.all(np.isfinite(p0)) or (p0 < 0).any() or p0.sum() <= 0:
            raise EquilibriumInputError(f"p0 must be a non-negative ({n},) array with positive sum")
        p0[log_nu == -np.inf] = 0.0

    p, iters, e = _kernels.solve(idx, offsets, dense_k, g, log_nu, float(tau), float(lam), max_k,
                                 p0, float(tol), int(max_iter), bool(fast))
    if e > tol:
        warnings.warn(f"equilibrium not converged after {iters} steps: exploitability {e:.3g} > tol {tol:.3g}",
                      EquilibriumConvergenceWarning, stacklevel=2)
    return Equilibrium(p=p, iters=int(iters), exploitability=float(e))


def lam_for_diversity(codes: np.ndarray, g: np.ndarray, *, n_choices: int | Sequence[int], tau: float,
                      target: float, log_nu: np.ndarray | None = None, p0: np.ndarray | None = None,
                      lam_start: float | None = None, rtol: float = 1e-2,
                      tol: float = 1e-10) -> tuple[float, Equilibrium]:
    """Smallest lam (to rtol) whose equilibrium has parent diversity >= target, with lam <= LAM_CAP tau.

    Diversity 1 - p*^T K p* does not decrease with lam, so bisection applies: the bracket grows by
    doubling from lam_start (default tau; a search passes the previous generation's lam), then halves.
    Returns (lam, equilibrium at lam): lam = 0 when Boltzmann selection is diverse enough already;
    lam = LAM_CAP tau when the population cannot reach the target (its most diverse selection; in a
    converged population that is routine, so no warning).
    """
    if not 0.0 <= target < 1.0:
        raise EquilibriumInputError(f"target parent diversity must be in [0, 1), got {target}")
    cap = LAM_CAP * tau

    def solve(lam, start):
        eq = solve_equilibrium(codes, g, n_choices=n_choices, tau=tau, lam=lam, log_nu=log_nu, p0=start, tol=tol)
        return eq, parent_diversity(codes, eq.p, n_choices)

    eq0, div0 = solve(0.0, p0)
    if div0 >= target:
        return 0.0, eq0
    lo, hi = 0.0, min(max(lam_start or tau, 1e-6 * tau), cap)
    eq_hi, div_hi = solve(hi, eq0.p)
    while div_hi < target:
        if hi >= cap:
            return float(hi), eq_hi
        lo, hi = hi, min(2.0 * hi, cap)
        eq_hi, div_hi = solve(hi, eq_hi.p)
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        eq_mid, div_mid = solve(mid, eq_hi.p)
        if div_mid >= target:
            hi, eq_hi = mid, eq_mid
        else:
            lo = mid
    return float(hi), eq_hi


def _bin_index(codes: np.ndarray, n_choices: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Histogram bin of every (candidate, layer): offset of the layer + choice; and the layer offsets."""
    idx, offsets, _ = _encode(codes, n_choices)
    return idx, offsets


def _encode(codes: np.ndarray, n_choices: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin index (N, L) int32, layer offsets (L+1,), log nu) with the input checked."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise EquilibriumInputError(f"codes must be a 2-D integer array (N, L) with L >= 1, got "
                                    f"{codes.dtype} {codes.shape}")
    choices = np.ascontiguousarray(np.broadcast_to(np.asarray(n_choices, dtype=np.int64), (codes.shape[1],)))
    if (choices < 1).any():
        raise EquilibriumInputError(f"n_choices must be positive, got {n_choices}")
    idx, offsets, log_nu, status = _kernels.encode(np.ascontiguousarray(codes, dtype=np.int64), choices)
    if status == 1:
        raise EquilibriumInputError("codes must be integers in [0, n_choices) for every layer")
    if status == 2:  # rows too long for an int64 key: count duplicates on the rows' bytes
        rows = np.ascontiguousarray(codes, dtype=np.int64)
        keys = rows.view(np.dtype((np.void, 8 * rows.shape[1]))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        log_nu = -np.log(counts[inverse.reshape(-1)].astype(np.float64)) - np.log(len(counts))
    return idx, offsets, log_nu
