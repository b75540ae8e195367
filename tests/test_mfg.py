"""The design note's properties 1-10 of the mean-field-game selection equilibrium (mfg_selection.md)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastnas import mfg_reference as ref
from fastnas.mfg import (Equilibrium, EquilibriumConvergenceWarning, EquilibriumInputError,
                         LAM_CAP, NonUniqueEquilibriumWarning, effective_fitness, lam_for_diversity, parent_diversity,
                         reference_measure, solve_equilibrium, warm_start)

C, L = 4, 6


def population(n, seed=0, n_layers=L, n_choices=C, spread=1.0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_choices, (n, n_layers)), rng.normal(0.0, spread, n)


def solve(codes, g, **kw):
    """Solve to round-off by default: tol < 0 runs exactly max_iter steps. (Stopping at E <= 0 would
    leave p off by up to ~1e-8: E is quadratic in the error and bottoms out at ~1e-16.)"""
    kw.setdefault("n_choices", C)
    kw.setdefault("tol", -1.0)
    kw.setdefault("max_iter", 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EquilibriumConvergenceWarning)
        return solve_equilibrium(codes, g, **kw)


def kl(p, q):
    pos = p > 0
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])))


def softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def potential(codes, g, p, tau, lam):
    return ref.potential(p, g, ref.similarity_matrix(codes) @ p, reference_measure(codes), tau, lam)


# 1. lam = 0 is Boltzmann selection; tau -> 0 is the elitist argmax.
@pytest.mark.parametrize("fast", [True, False])
def test_lam_zero_is_softmax_and_small_tau_is_argmax(fast):
    codes, g = population(30)
    eq = solve(codes, g, tau=0.7, lam=0.0, fast=fast)
    np.testing.assert_allclose(eq.p, softmax(g / 0.7), rtol=1e-12, atol=1e-15)
    cold = solve(codes, g, tau=1e-3, lam=0.0, fast=fast)
    assert cold.p[np.argmax(g)] == pytest.approx(1.0, abs=1e-12)


# 2. K PSD: the fixed point is the maximiser of Phi found by a general optimiser.
@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_equilibrium_maximises_potential(lam):
    from scipy.optimize import minimize

    codes, g = population(10, seed=1)
    codes[3] = codes[7]  # a duplicate: nu is non-uniform
    tau = 0.5
    k, log_nu = ref.similarity_matrix(codes), reference_measure(codes)

    def neg_phi(p):
        return -(g @ p - 0.5 * lam * p @ k @ p - tau * np.sum(p * (np.log(p) - log_nu)))

    def neg_grad(p):
        return -(g - lam * k @ p - tau * (np.log(p) - log_nu + 1.0))

    res = minimize(neg_phi, np.full(10, 0.1), jac=neg_grad, method="SLSQP", bounds=[(1e-12, 1.0)] * 10,
                   constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones(10)}],
                   options={"ftol": 1e-16, "maxiter": 2000})
    assert res.success, res.message
    eq = solve(codes, g, tau=tau, lam=lam)
    assert np.abs(eq.p - res.x).sum() < 1e-6
    assert -res.fun <= potential(codes, g, eq.p, tau, lam) + 1e-12


# 3. Permuting the population permutes p*.
def test_permutation_equivariance():
    codes, g = population(40, seed=2)
    perm = np.random.default_rng(0).permutation(40)
    eq = solve(codes, g, tau=0.5, lam=2.0)
    eq_perm = solve(codes[perm], g[perm], tau=0.5, lam=2.0)
    np.testing.assert_allclose(eq_perm.p, eq.p[perm], atol=1e-10)


# 4. f + c changes nothing; (a f, a lam, a tau) changes nothing.
def test_shift_and_scale_invariance():
    codes, g = population(40, seed=3)
    eq = solve(codes, g, tau=0.5, lam=2.0)
    np.testing.assert_allclose(solve(codes, g + 71.3, tau=0.5, lam=2.0).p, eq.p, atol=1e-10)
    np.testing.assert_allclose(solve(codes, 3.0 * g, tau=1.5, lam=6.0).p, eq.p, atol=1e-10)


# 5. With nu ~ 1 / multiplicity, a group of exact duplicates keeps its total mass whatever its size.
def test_clone_invariance():
    codes, g = population(20, seed=4)
    base = solve(codes, g, tau=0.5, lam=2.0)
    for copies in (2, 5):
        cl_codes = np.concatenate([codes, np.repeat(codes[:1], copies - 1, axis=0)])
        cl_g = np.concatenate([g, np.repeat(g[:1], copies - 1)])
        eq = solve(cl_codes, cl_g, tau=0.5, lam=2.0)
        group = eq.p[0] + eq.p[20:].sum()
        assert group == pytest.approx(base.p[0], abs=1e-10)
        np.testing.assert_allclose(eq.p[1:20], base.p[1:20], atol=1e-10)


# 6. p*^T K p* does not increase with lam; the entropy of p* does not decrease with tau.
def test_monotonicity():
    codes, g = population(60, seed=5, n_layers=10)
    assert len(np.unique(codes, axis=0)) == 60  # uniform nu: entropy is the right quantity
    crowding = [1 - parent_diversity(codes, solve(codes, g, tau=0.5, lam=lam).p, C)
                for lam in [0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 20.0]]
    assert np.all(np.diff(crowding) <= 1e-9), crowding
    entropy = []
    for tau in [0.05, 0.1, 0.3, 1.0, 3.0, 10.0]:
        p = solve(codes, g, tau=tau, lam=2.0).p
        entropy.append(-np.sum(p * np.log(p)))
    assert np.all(np.diff(entropy) >= -1e-9), entropy
    assert crowding[-1] < crowding[0] - 0.05 / L and entropy[-1] > entropy[0] + 1.0  # not flat


def iterates(codes, g, steps, **kw):
    """p_0, p_1, ..., p_steps of the solver (tol = 0: exactly k steps)."""
    return [solve(codes, g, max_iter=k, **kw).p for k in range(steps + 1)]


# 7. The log-damped iteration contracts KL(p* || p) at least by lam / (lam + tau) per step.
@pytest.mark.parametrize("tau,lam", [(0.5, 2.0), (0.2, 5.0), (1.0, 0.5)])
def test_contraction_rate_of_log_damping(tau, lam):
    codes, g = population(40, seed=6)
    p_star = solve(codes, g, tau=tau, lam=lam, max_iter=5000).p
    rate = lam / (lam + tau)
    kls = [kl(p_star, p) for p in iterates(codes, g, 25, tau=tau, lam=lam, fast=False)]
    checked = 0
    for before, after in zip(kls, kls[1:]):
        if before > 1e-11:  # above round-off
            assert after <= (rate + 1e-3) * before, (before, after, rate)
            checked += 1
    assert checked >= 5


# 8. Exploitability bounds the potential gap at every iterate (both steps).
@pytest.mark.parametrize("fast", [True, False])
def test_exploitability_bounds_potential_gap(fast):
    codes, g = population(40, seed=7)
    codes[5] = codes[9]
    tau, lam = 0.3, 4.0
    phi_star = potential(codes, g, solve(codes, g, tau=tau, lam=lam, max_iter=5000).p, tau, lam)
    for k in range(30):
        eq = solve(codes, g, tau=tau, lam=lam, max_iter=k, fast=fast)
        gap = phi_star - potential(codes, g, eq.p, tau, lam)
        assert eq.exploitability >= gap - 1e-12, (k, eq.exploitability, gap)
        assert eq.exploitability >= -1e-14


# 9. The compiled kernel equals the NumPy reference, step for step (low-rank and dense similarity).
# N = 1500 makes the kernel group layers in pairs (joint 7 x 7 histograms); N = 300 does not.
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("steps", [0, 1, 7, 20])
@pytest.mark.parametrize("n", [300, 1500])
def test_kernel_matches_numpy_reference(fast, steps, n):
    codes, g = population(n, seed=8, n_layers=21, n_choices=7, spread=2.0)
    codes[10:20] = codes[0]
    log_nu, tau, lam = reference_measure(codes), 0.5, 3.0
    p0 = softmax(log_nu + g / tau)
    k = ref.similarity_matrix(codes) if n <= 300 else None
    common = dict(tau=tau, lam=lam, tol=-1.0, max_iter=steps, fast=fast)
    low = solve(codes, g, n_choices=7, **common)
    pairs = [(low, ref.solve_lowrank(codes, 7, g, log_nu, p0=p0, **common)),
             (low, ref.solve_dense(codes, 7, g, log_nu, p0=p0, **common))]
    if n <= 300:  # a user-supplied dense similarity (the front checks its spectrum: O(N^3))
        dense = solve(None, g, n_choices=7, similarity=k, log_nu=log_nu, **common)
        pairs.append((dense, ref.solve_similarity(k, g, log_nu, p0=p0, **common)))
        if not fast:  # the same iteration whichever way K p is computed
            np.testing.assert_allclose(low.p, dense.p, rtol=0, atol=1e-12)
    for eq, r in pairs:
        assert eq.iters == r.iters == steps
        np.testing.assert_allclose(eq.p, r.p, rtol=0, atol=1e-12)
        assert eq.exploitability == pytest.approx(r.exploitability, abs=1e-12)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("n", [200, 3000])  # 3000: layers grouped in triples
def test_kernel_matches_reference_to_tolerance(fast, n):
    codes, g = population(n, seed=9, n_layers=21, n_choices=7, spread=2.0)
    log_nu, tau, lam = reference_measure(codes), 0.5, 3.0
    eq = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam, fast=fast)
    low = ref.solve_lowrank(codes, 7, g, log_nu, tau=tau, lam=lam, p0=softmax(log_nu + g / tau), fast=fast)
    assert eq.iters == low.iters and eq.exploitability <= 1e-10
    np.testing.assert_allclose(eq.p, low.p, rtol=0, atol=1e-12)


def test_dense_similarity_matches_low_rank():
    codes, g = population(50, seed=10)
    k = ref.similarity_matrix(codes)
    for fast in (True, False):
        a = solve(codes, g, tau=0.5, lam=2.0, fast=fast)
        b = solve(None, g, tau=0.5, lam=2.0, similarity=k, log_nu=reference_measure(codes), fast=fast)
        np.testing.assert_allclose(a.p, b.p, atol=1e-12)


# 10. An indefinite similarity with lam |lambda_min| >= tau warns; a PSD one does not.
def test_indefinite_similarity_warns():
    rng = np.random.default_rng(11)
    n = 12
    a = rng.normal(size=(n, n))
    k = (a + a.T) / 2
    lam_min = np.linalg.eigvalsh(k)[0]
    assert lam_min < 0
    g = rng.normal(size=n)
    tau = 0.5
    with pytest.warns(NonUniqueEquilibriumWarning):
        solve_equilibrium(None, g, n_choices=C, tau=tau, lam=1.01 * tau / -lam_min, similarity=k, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonUniqueEquilibriumWarning)
        solve_equilibrium(None, g, n_choices=C, tau=tau, lam=0.5 * tau / -lam_min, similarity=k)
        solve_equilibrium(None, g, n_choices=C, tau=tau, lam=50.0, similarity=k @ k.T / n)


# The faster local step reaches the same equilibrium as log damping, in fewer steps.
def test_fast_step_agrees_with_log_damping():
    codes, g = population(500, seed=12, n_layers=21, n_choices=7, spread=2.0)
    for tau, lam in [(0.5, 2.0), (0.3, 10.0), (1.0, 0.2)]:
        slow = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam, fast=False, tol=1e-14)
        fast = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam, fast=True, tol=1e-14)
        np.testing.assert_allclose(fast.p, slow.p, atol=1e-6)
        assert fast.iters <= slow.iters


def test_warm_start_matches_by_encoding():
    codes, g = population(100, seed=13, n_layers=21, n_choices=7, spread=2.0)
    tau, lam = 0.5, 3.0
    prev = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam, tol=1e-13)
    # Next generation: shuffled survivors and 10 newcomers.
    rng = np.random.default_rng(0)
    keep = rng.permutation(100)[:90]
    new_codes = np.concatenate([codes[keep], rng.integers(0, 7, (10, 21))])
    new_g = np.concatenate([g[keep], rng.normal(0, 2, 10)])
    p0 = warm_start(codes, prev.p, new_codes)
    np.testing.assert_allclose(p0[:90], prev.p[keep] / prev.p[keep].sum())
    assert np.all(p0[90:] == 0)
    cold = solve_equilibrium(new_codes, new_g, n_choices=7, tau=tau, lam=lam, tol=1e-13)
    warm = solve_equilibrium(new_codes, new_g, n_choices=7, tau=tau, lam=lam, p0=p0, tol=1e-13)
    np.testing.assert_allclose(warm.p, cold.p, atol=1e-6)
    assert warm.iters < cold.iters
    assert warm_start(codes, prev.p, rng.integers(0, 7, (5, 21)) + 7) is None  # nothing survived
    same = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam, p0=prev.p, tol=1e-10)
    assert same.iters == 0


def test_reference_measure_and_effective_fitness():
    codes = np.array([[0, 1], [0, 1], [1, 1], [0, 1]])
    np.testing.assert_allclose(np.exp(reference_measure(codes)), [1 / 6, 1 / 6, 1 / 2, 1 / 6])
    for n_layers in (21, 40):  # 7^40 does not fit the int64 key: the bytes fallback
        codes, _ = population(300, seed=18, n_layers=n_layers, n_choices=7)
        codes[50:60] = codes[3]
        codes[100:102] = codes[200]
        np.testing.assert_allclose(reference_measure(codes), ref.reference_measure(codes), rtol=0, atol=1e-15)
    np.testing.assert_allclose(effective_fitness([1.0, 2.0], [0.5, 0.0], tau=0.25), [0.0, 2.0])
    np.testing.assert_allclose(effective_fitness([1.0, 2.0], None, tau=0.25), [1.0, 2.0])


def test_lam_for_diversity_hits_target():
    codes, g = population(80, seed=14, n_layers=21, n_choices=7, spread=2.0)
    tau = 0.5
    d0 = parent_diversity(codes, solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=0.0).p, 7)
    target = d0 + 0.6 * (6 / 7 - d0)
    lam, eq = lam_for_diversity(codes, g, n_choices=7, tau=tau, target=target, rtol=1e-4)
    assert lam > 0 and isinstance(eq, Equilibrium)
    assert parent_diversity(codes, eq.p, 7) >= target
    below = solve_equilibrium(codes, g, n_choices=7, tau=tau, lam=lam * (1 - 1e-3)).p
    assert parent_diversity(codes, below, 7) < target + 1e-4
    assert lam_for_diversity(codes, g, n_choices=7, tau=tau, target=d0 - 0.01)[0] == 0.0
    with pytest.raises(EquilibriumInputError):
        lam_for_diversity(codes, g, n_choices=7, tau=tau, target=1.0)


def test_unreachable_diversity_returns_the_capped_lam():
    """A converged population (three distinct members) cannot reach 0.8: lam stops at LAM_CAP tau, converged."""
    codes, g = population(3, seed=18, n_layers=6, n_choices=5, spread=2.0)
    codes = np.repeat(codes, 5, axis=0)
    g = np.repeat(g, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lam, eq = lam_for_diversity(codes, g, n_choices=5, tau=0.5, target=0.8)
    assert lam == LAM_CAP * 0.5 and eq.exploitability <= 1e-10
    assert parent_diversity(codes, eq.p, 5) < 0.8


def test_parent_diversity_is_expected_hamming_share():
    codes, _ = population(30, seed=15)
    p = np.random.default_rng(1).dirichlet(np.ones(30))
    hamming = (codes[:, None, :] != codes[None, :, :]).mean(axis=2)
    assert parent_diversity(codes, p, C) == pytest.approx(p @ hamming @ p, abs=1e-12)


def test_per_layer_choices():
    rng = np.random.default_rng(16)
    choices = [2, 5, 3, 7, 4, 4]
    for n in (40, 400):  # 400: layers grouped into joint histograms of unequal sizes
        codes = np.stack([rng.integers(0, c, n) for c in choices], axis=1)
        g = rng.normal(size=n)
        eq = solve(codes, g, n_choices=choices, tau=0.5, lam=2.0, max_iter=50)
        low = ref.solve_lowrank(codes, choices, g, reference_measure(codes), tau=0.5, lam=2.0,
                                p0=softmax(reference_measure(codes) + g / 0.5), tol=-1.0, max_iter=50)
        np.testing.assert_allclose(eq.p, low.p, rtol=0, atol=1e-12)


def test_excluded_candidates_get_no_mass():
    codes, g = population(20, seed=17)
    log_nu = np.zeros(20)
    log_nu[[2, 5]] = -np.inf
    eq = solve(codes, g, tau=0.5, lam=2.0, log_nu=log_nu)
    assert eq.p[2] == 0 and eq.p[5] == 0 and np.isfinite(eq.p).all() and eq.p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [dict(tau=0.0, lam=1.0), dict(tau=1.0, lam=-1.0), dict(tau=np.nan, lam=1.0)])
def test_bad_parameters_raise_clear_errors(kwargs):
    codes, g = population(5)
    with pytest.raises(EquilibriumInputError):
        solve_equilibrium(codes, g, n_choices=C, **kwargs)


def test_bad_codes_raise_clear_errors():
    codes, g = population(5)
    with pytest.raises(EquilibriumInputError):
        solve_equilibrium(codes + C, g, n_choices=C, tau=1.0, lam=1.0)
    with pytest.raises(EquilibriumInputError):
        solve_equilibrium(codes[:4], g, n_choices=C, tau=1.0, lam=1.0)
    with pytest.raises(EquilibriumInputError):
        solve_equilibrium(codes, g, n_choices=C, tau=1.0, lam=1.0, p0=np.zeros(5))


def test_warm_start_with_underflowed_zero_stays_finite():
    # Regression: a warm start whose p0 has an exact 0 (an unfit member underflowed at small tau)
    # once gave an all-nan p through fastmath reassociation of a -inf term in the log damping.
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 5, size=(20, 6))
    g = 89.0 + rng.normal(0, 1.5, 20)
    g[1] = 9.7
    p0 = np.exp((g - g.max()) / 0.1 * 20)          # member 1 underflows to exactly 0
    assert p0[1] == 0.0
    eq = solve_equilibrium(codes, g, n_choices=5, tau=0.1, lam=3.0, p0=p0)
    assert np.all(np.isfinite(eq.p)) and abs(eq.p.sum() - 1) < 1e-12
    ref = solve_equilibrium(codes, g, n_choices=5, tau=0.1, lam=3.0)
    assert np.abs(eq.p - ref.p).sum() < 1e-4


@pytest.mark.parametrize("lam", [1e3, 1e4, 1e6])
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_large_lam_converges_to_tolerance(lam, seed):
    """Regimes where the local step's bound shrinks its step to ~tau / lam (it stalled at E ~ 1e4 for
    lam = 1e6 and log damping needed > 1e5 steps): the solver hands over to the dual Newton solve and
    reaches the default tolerance with a p that is, checked in NumPy, a fixed point p = G(p)."""
    codes, g = population(30, seed=seed, n_layers=6, n_choices=5, spread=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EquilibriumConvergenceWarning)
        eq = solve_equilibrium(codes, g, n_choices=5, tau=1.0, lam=lam)
    assert eq.exploitability <= 1e-10 and eq.iters < 5000
    log_nu = reference_measure(codes)
    gp = softmax(log_nu + (g - lam * (ref.similarity_matrix(codes) @ eq.p)) / 1.0)
    assert kl(eq.p, gp) <= 1e-9
    # and it is the maximiser: no nearby mixture with the uniform distribution does better
    phi = potential(codes, g, eq.p, 1.0, lam)
    for eps in (1e-3, 1e-6):
        q = (1 - eps) * eq.p + eps / 30
        assert potential(codes, g, q, 1.0, lam) <= phi + 1e-9 * abs(phi)
