"""Plain NumPy reference of the equilibrium solver (fastnas.kernels.mfg), for tests and benchmarks.

Same iteration, step for step, as the compiled kernel, written for reading: `solve_lowrank` multiplies
by K through per-layer histograms, `solve_dense` through the N x N similarity (the textbook form),
`solve_similarity` takes a user-supplied dense similarity (the kernel's `dense_k` path).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from fastnas.mfg import Equilibrium


def bin_index(codes: np.ndarray, n_choices) -> tuple[np.ndarray, np.ndarray]:
    """Histogram bin of every (candidate, layer), offset of the layer + choice; and the layer offsets."""
    codes = np.asarray(codes)
    choices = np.broadcast_to(np.asarray(n_choices, dtype=np.int64), (codes.shape[1],))
    offsets = np.concatenate(([0], np.cumsum(choices)))
    return codes + offsets[:-1], offsets


def reference_measure(codes: np.ndarray) -> np.ndarray:
    """log nu, nu_i = 1 / (multiplicity_i * number of distinct rows)."""
    _, inverse, counts = np.unique(np.asarray(codes), axis=0, return_inverse=True, return_counts=True)
    return -np.log(counts[inverse.reshape(-1)]) - np.log(len(counts))


def similarity_matrix(codes: np.ndarray) -> np.ndarray:
    """Dense K_ij = share of layers where candidates i and j make the same choice: X X^T / L."""
    codes = np.asarray(codes)
    idx, _ = bin_index(codes, codes.max(axis=0) + 1)
    onehot = np.zeros((codes.shape[0], int(idx.max()) + 1))
    np.put_along_axis(onehot, idx, 1.0, axis=1)
    return onehot @ onehot.T / codes.shape[1]


def potential(p: np.ndarray, g: np.ndarray, kp: np.ndarray, log_nu: np.ndarray, tau: float, lam: float) -> float:
    """Phi(p) = g.p - (lam/2) p^T K p - tau KL(p || nu), given kp = K p."""
    pos = p > 0
    kl = np.sum(p[pos] * (np.log(p[pos]) - log_nu[pos]))
    return float(g @ p - 0.5 * lam * (p @ kp) - tau * kl)


def solve_lowrank(codes, n_choices, g, log_nu, *, tau: float, lam: float, p0, tol: float = 1e-10,
                  max_iter: int = 100000, fast: bool = True, dense_k: np.ndarray | None = None) -> Equilibrium:
    """Reference solve with K p = X (X^T p) / L through per-layer histograms of p.

    dense_k: the same K as a dense matrix (`similarity_matrix(codes)`), to multiply by it instead
    (the textbook O(N^2) product); the iterates are the same.
    """
    idx, offsets = bin_index(codes, n_choices)
    n_layers = idx.shape[1]
    flat = idx.ravel()

    def histograms(p):
        return np.bincount(flat, weights=np.repeat(p, n_layers), minlength=int(offsets[-1]))

    def matvec(p):
        return histograms(p)[idx].sum(axis=1) / n_layers

    def rate_bound(p, kp):
        hist = histograms(p)
        layers = [hist[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        per_layer = max(min(h.max(), 1.0 - h @ h) for h in layers)
        return min(1.0 - float(p @ kp), per_layer)

    if dense_k is not None:
        dense_k = np.asarray(dense_k, dtype=np.float64)
        matvec = dense_k.__matmul__
    return _iterate(matvec, rate_bound, g, log_nu, tau, lam, 1.0, p0, tol, max_iter, fast)


def solve_dense(codes, n_choices, g, log_nu, *, tau: float, lam: float, p0, tol: float = 1e-10,
                max_iter: int = 100000, fast: bool = True) -> Equilibrium:
    """Reference solve through the dense N x N similarity (built here, as a textbook solver would)."""
    return solve_lowrank(codes, n_choices, g, log_nu, tau=tau, lam=lam, p0=p0, tol=tol, max_iter=max_iter,
                         fast=fast, dense_k=similarity_matrix(codes))


def solve_similarity(k: np.ndarray, g, log_nu, *, tau: float, lam: float, p0, tol: float = 1e-10,
                     max_iter: int = 100000, fast: bool = True) -> Equilibrium:
    """Reference solve with a user-supplied dense similarity (rate bound: the trace bound only)."""
    k = np.asarray(k, dtype=np.float64)
    diag = np.diag(k).copy()

    def rate_bound(p, kp):
        return float(p @ diag - p @ kp)

    return _iterate(k.__matmul__, rate_bound, g, log_nu, tau, lam, float(np.abs(k).max()),
                    p0, tol, max_iter, fast)


def _iterate(matvec: Callable, rate_bound: Callable, g, log_nu, tau, lam, max_k, p0, tol, max_iter,
             fast) -> Equilibrium:
    g = np.asarray(g, dtype=np.float64)
    log_nu = np.asarray(log_nu, dtype=np.float64)
    p = np.asarray(p0, dtype=np.float64) / np.sum(p0)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    picard_first = bool(np.any((p == 0) & (log_nu > -np.inf)))
    b = tau / (tau + lam * max_k)
    pos_prev_e = np.inf
    it = 0
    while True:
        kp = matvec(p)
        s = log_nu + (g - lam * kp) / tau
        log_g = s - _logsumexp(s)
        pos = p > 0
        e = tau * float(np.sum(p[pos] * (log_p[pos] - log_g[pos])))
        if e <= tol or it >= max_iter:
            break
        if picard_first:
            picard_first = False
            log_p = log_g
            p = np.exp(log_g)
        elif fast and e <= pos_prev_e:
            rho = lam / tau * max(rate_bound(p, kp), 0.0)
            a = 2.0 / (2.0 + rho)
            p = (1.0 - a) * p + a * np.exp(log_g)
            with np.errstate(divide="ignore"):
                log_p = np.log(p)
        else:
            fast = False
            with np.errstate(invalid="ignore"):
                t = np.where((log_g == -np.inf) | (log_p == -np.inf), -np.inf, (1.0 - b) * log_p + b * log_g)
            log_p = t - _logsumexp(t)
            p = np.exp(log_p)
        pos_prev_e = e
        it += 1
    return Equilibrium(p=p, iters=it, exploitability=e)


def _logsumexp(s: np.ndarray) -> float:
    m = s.max()
    return float(m + np.log(np.sum(np.exp(s - m))))
