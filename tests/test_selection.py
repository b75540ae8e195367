"""Selectors: parent distributions, survival policies, SUS, the MFG selector's knobs and state."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastnas.mfg import parent_diversity
from fastnas.selection import (SELECTORS, MFGSelector, Pool, make_selector, pairwise_diversity,
                               softmax, survive, sus)


def make_pool(n=12, L=6, C=4, seed=0, dup=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(C, size=(n, L))
    if dup:
        codes[-dup:] = codes[0]
    fitness = rng.normal(70, 2, size=n)
    return Pool(codes, fitness, np.arange(n), n_choices=C)


def test_sus_counts_are_floor_or_ceil():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(9))
    for n in (1, 7, 50, 333):
        counts = np.bincount(sus(p, n, rng), minlength=9)
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * p) - 1e-9) and np.all(counts <= np.ceil(n * p) + 1e-9)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_draws_valid_seeded_parents(name):
    pool = make_pool()
    sel = make_selector(name)
    a = sel.parents(pool, 40, np.random.default_rng(3))
    b = make_selector(name).parents(pool, 40, np.random.default_rng(3))
    assert a.shape == (40,) and a.min() >= 0 and a.max() < len(pool)
    np.testing.assert_array_equal(a, b)
    keep = sel.survivors(pool, 5, elites=1)
    assert len(keep) == 5 and len(set(keep.tolist())) == 5


def test_unknown_selector_is_rejected():
    with pytest.raises(ValueError, match="allowed"):
        make_selector("nope")


def test_boltzmann_and_mfg_lam0_are_softmax():
    pool = make_pool()
    expected = softmax(pool.fitness / 0.7)
    np.testing.assert_allclose(make_selector("boltzmann", tau=0.7).probabilities(pool), expected, atol=1e-12)
    np.testing.assert_allclose(MFGSelector(tau=0.7, lam=0.0).probabilities(pool), expected, atol=1e-9)


def test_mfg_crowding_spreads_parents_and_target_is_met():
    pool = make_pool(n=30, dup=8)        # a crowded cluster of 9 copies
    divs = [parent_diversity(pool.codes, MFGSelector(tau=1.0, lam=lam).probabilities(pool), pool.n_choices)
            for lam in (0.0, 1.0, 4.0, 16.0)]
    assert all(b >= a - 1e-9 for a, b in zip(divs, divs[1:])) and divs[-1] > divs[0] + 0.05
    target = (divs[0] + divs[-1]) / 2
    sel = MFGSelector(tau=1.0, lam=0.5, target_diversity=target)
    p = sel.probabilities(pool)
    assert parent_diversity(pool.codes, p, pool.n_choices) >= target - 1e-9
    assert sel.last_lam > 0
    # the bisection finds (nearly) the smallest such lam
    smaller = MFGSelector(tau=1.0, lam=sel.last_lam * 0.9).probabilities(pool)
    assert parent_diversity(pool.codes, smaller, pool.n_choices) < target


def test_mfg_default_rule_is_invariant_to_fitness_units():
    """The default rule (tau from the spread, lam from the diversity target) sees no fitness units:
    (a f + c) selects as f does, so one default serves top-1 %, losses and any dataset's scale."""
    pool = make_pool(n=30, dup=8)
    scaled = Pool(pool.codes, pool.fitness * 10 + 3, pool.birth, pool.n_choices)
    for target in (None, 0.5):                       # the default target (0.2), and one that needs crowding
        a, b = MFGSelector(target_diversity=target), MFGSelector(target_diversity=target)
        np.testing.assert_allclose(a.probabilities(pool), b.probabilities(scaled), atol=1e-3)
        assert b.last_tau == pytest.approx(10 * a.last_tau) and b.last_lam == pytest.approx(10 * a.last_lam, rel=0.02)
    assert MFGSelector().target_diversity == 0.2 and a.last_lam > 0


def test_mfg_default_rule_tau_follows_the_noise():
    pool = make_pool(n=20)
    quiet = MFGSelector()
    quiet.probabilities(pool)
    noisy = Pool(pool.codes, pool.fitness, pool.birth, pool.n_choices, variance=np.full(20, 4.0))
    loud = MFGSelector()
    loud.probabilities(noisy)
    assert loud.last_tau == pytest.approx(np.sqrt(4.0 + quiet.last_tau ** 2))


def test_mfg_state_roundtrip_reproduces_the_next_draw():
    pools = [make_pool(seed=s) for s in range(3)]
    a = MFGSelector(tau=0.5, lam=3.0)
    for pool in pools[:2]:
        a.probabilities(pool)
    b = MFGSelector(tau=0.5, lam=3.0)
    b.load_state_dict(a.state_dict())
    pa = a.parents(pools[2], 20, np.random.default_rng(1))
    pb = b.parents(pools[2], 20, np.random.default_rng(1))
    np.testing.assert_array_equal(pa, pb)


def test_tournament_of_everyone_picks_the_best_and_k1_is_uniform():
    pool = make_pool()
    best = int(np.argmax(pool.fitness))
    assert set(make_selector("tournament", k=len(pool)).parents(pool, 30, np.random.default_rng(0))) == {best}
    counts = np.bincount(make_selector("tournament", k=1).parents(pool, 12000, np.random.default_rng(0)),
                         minlength=len(pool))
    assert counts.min() > 800 and counts.max() < 1200


def test_truncation_parents_come_from_the_top():
    pool = make_pool(n=20)
    top = set(np.argsort(-pool.fitness)[:5].tolist())
    assert set(make_selector("truncation", top=5).parents(pool, 100, np.random.default_rng(0)).tolist()) <= top
    assert make_selector("truncation").survival == "fitness"


def test_ranking_and_roulette_are_distributions_ordered_by_fitness():
    pool = make_pool()
    order = np.argsort(pool.fitness)
    for name in ("ranking", "roulette", "boltzmann"):
        p = make_selector(name).probabilities(pool)
        assert abs(p.sum() - 1) < 1e-12 and np.all(np.diff(p[order]) >= -1e-15)


def test_fitness_sharing_penalises_crowds():
    codes = np.array([[0, 0, 0, 0]] * 4 + [[1, 1, 1, 1]])
    pool = Pool(codes, np.array([1.0, 1.0, 1.0, 1.0, 1.0]), np.arange(5), n_choices=2)
    p = make_selector("sharing").probabilities(pool)
    assert p[4] > 3 * p[0]


def test_survival_policies():
    fitness = np.array([5.0, 1.0, 9.0, 2.0, 3.0, 4.0])
    birth = np.arange(6)
    # age: the fittest (index 2) stays as the elite, then the youngest
    np.testing.assert_array_equal(survive("age", fitness, birth, 3, elites=1), [2, 4, 5])
    np.testing.assert_array_equal(survive("age", fitness, birth, 3, elites=0), [3, 4, 5])
    np.testing.assert_array_equal(survive("fitness", fitness, birth, 3), [0, 2, 5])


def test_pairwise_diversity_matches_brute_force():
    codes = np.random.default_rng(0).integers(3, size=(9, 5))
    brute = np.mean([np.mean(codes[i] != codes[j]) for i, j in itertools.permutations(range(9), 2)])
    assert abs(pairwise_diversity(codes, 3) - brute) < 1e-12
    brute_p = np.mean([[np.mean(a != b) for b in codes] for a in codes])
    assert abs(parent_diversity(codes, np.full(9, 1 / 9), 3) - brute_p) < 1e-12
