"""Compiled fixed-point solver for the mean-field-game selection equilibrium.

Specification: ../shared/design/mfg_selection.md. For candidates with one-hot encodings X
(bins `idx[i, l]` = offset of layer l + choice), similarity K = X X^T / L, fitness g, log prior
log_nu, the equilibrium p* = G(p*) with

    G(p)_i = nu_i exp((g_i - lam (K p)_i) / tau) / sum_j nu_j exp((g_j - lam (K p)_j) / tau).

K p is computed through per-layer histograms of p (O(N L), never an N x N matrix); consecutive
layers are grouped into joint histograms so each candidate costs one lookup per group rather than
per layer (`group_layers`). A dense, user-supplied similarity is accepted for experiments (pass it
as `dense_k`, else a (0, 0) array).

Iteration (one evaluation of G per step, exploitability E(p) = tau KL(p || G(p)) as stopping rule):
  * log damping (safe default): log p <- (1 - b) log p + b log G(p), b = tau / (tau + lam max K);
  * local step (`fast`): p <- (1 - a) p + a G(p), a = 2 / (2 + rho) with rho an upper bound of the
    spectral radius of (lam / tau)(diag p - p p^T) K at the iterate; falls back to log damping for
    the rest of the solve as soon as E rises;
  * dual Newton, when the local step stalls (E not halved within STALL_WINDOW steps: at
    lam >= 1e4 tau the bound shrinks a towards tau / lam, and log damping's b = tau / (tau + lam) is
    as slow). With K = X X^T / L the equilibrium is p(y) = softmax(log nu + (g - X y) / tau) at the
    minimiser y* = lam X^T p* / L of the convex dual
        Psi(y) = L / (2 lam) |y|^2 + tau log sum_i nu_i exp((g_i - x_i.y) / tau),
    whose Newton steps (D = sum of choices unknowns, a D x D Cholesky, Armijo backtracking) converge
    in a few dozen steps whatever lam / tau. Dense similarities keep log damping.
A start p0 with zeros on admissible candidates (a warm start from another population) takes one
plain step p <- G(p0) first, since log damping cannot leave log p = -inf. tol < 0 runs max_iter steps.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# No 'nnan'/'ninf': log nu may hold -inf for excluded candidates.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Layers are grouped into joint histograms of up to N / 8 bins: (7 x 7 at N = 1000, 7^3 at N = 5000):
# the per-solve table work stays small next to the per-candidate lookups it saves.
JOINT_BINS_PER_CANDIDATE = 8
# The local step must halve E every STALL_WINDOW steps, else the dual Newton solve takes over.
# Measured (N = 30-1000, L = 6-21, tau = 1): lam <= 1e3 tau keeps the local step (<= 2.4k steps,
# <= 20 ms); at 1e4 it would take 10k-40k steps, and at 1e6 it never gets there; Newton needs ~100.
STALL_WINDOW = 100
STALL_FACTOR = 0.5


@njit(cache=True)
def encode(codes, choices):
    """Bin index (N, L) int32 of every (candidate, layer), layer offsets (L+1,), log nu ~ -log multiplicity.

    status: 0 ok; 1 a code outside [0, choices); 2 rows too long for an int64 key (log nu left to the caller).
    """
    n, n_layers = codes.shape
    offsets = np.zeros(n_layers + 1, np.int64)
    bits = 0.0
    for l in range(n_layers):
        offsets[l + 1] = offsets[l] + choices[l]
        bits += np.log2(max(choices[l], 1))
    idx = np.empty((n, n_layers), np.int32)
    log_nu = np.zeros(n)
    keys = np.zeros(n, np.int64)
    place = np.ones(n_layers, np.int64)  # mixed-radix place values (only used when < 2^62)
    if bits < 62.0:
        for l in range(1, n_layers):
            place[l] = place[l - 1] * choices[l - 1]
    for i in range(n):
        bad = False
        key = 0
        for l in range(n_layers):
            c = codes[i, l]
            bad |= (c < 0) | (c >= choices[l])
            idx[i, l] = offsets[l] + c
            key += c * place[l]
        if bad:
            return idx, offsets, log_nu, 1
        keys[i] = key
    if bits >= 62.0:
        return idx, offsets, log_nu, 2
    # Duplicates: equal mixed-radix keys, counted in an open-addressing hash table (O(N), no sort).
    table_bits = 1
    while (1 << table_bits) < 2 * n:
        table_bits += 1
    slot_key = np.full(1 << table_bits, -1, np.int64)
    slot_count = np.zeros(1 << table_bits, np.int64)
    slot_of = np.empty(n, np.int64)
    mask = (1 << table_bits) - 1
    distinct = 0
    for i in range(n):
        key = keys[i]
        h = np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - table_bits))
        while slot_key[h] != -1 and slot_key[h] != key:
            h = (h + 1) & mask
        if slot_key[h] == -1:
            slot_key[h] = key
            distinct += 1
        slot_count[h] += 1
        slot_of[i] = h
    log_distinct = np.log(distinct)
    for i in range(n):
        log_nu[i] = -np.log(slot_count[slot_of[i]]) - log_distinct
    return idx, offsets, log_nu, 0


@njit(cache=True)
def group_layers(idx, offsets, max_joint_bins):
    """Group consecutive layers so K p takes fewer lookups per candidate.

    A group's joint histogram (one bin per combination of its layers' choices, at most
    max_joint_bins of them unless a single layer has more) yields the group's per-layer histograms
    by summing, and a table of the sums h_l1[a] + h_l2[b] + ... per joint bin; (K p)_i is then one
    table lookup per group instead of one histogram lookup per layer.
    Returns jidx (N, G) int32, the joint bin of every (candidate, group), and members
    (joint bins, max group size) int32, the per-layer bins of every joint bin (padded with the
    dummy bin offsets[-1]).
    """
    n, n_layers = idx.shape
    n_bins = offsets[n_layers]
    first = np.zeros(n_layers + 1, np.int64)  # group g holds layers first[g] .. first[g+1]-1
    n_groups = 0
    size = 1
    for l in range(n_layers):
        c = offsets[l + 1] - offsets[l]
        if l == 0 or size * c > max_joint_bins:
            first[n_groups] = l
            n_groups += 1
            size = 1
        size *= c
    first[n_groups] = n_layers
    joint_offsets = np.zeros(n_groups + 1, np.int64)
    max_size = 1
    for gi in range(n_groups):
        size = 1
        for l in range(first[gi], first[gi + 1]):
            size *= offsets[l + 1] - offsets[l]
        joint_offsets[gi + 1] = joint_offsets[gi] + size
        max_size = max(max_size, first[gi + 1] - first[gi])
    members = np.full((joint_offsets[n_groups], max_size), n_bins, np.int32)
    group = np.empty(n_layers, np.int64)  # group of each layer
    shift = np.empty(n_layers, np.int64)  # place value of the layer's choice in its group's joint code
    for gi in range(n_groups):
        place = 1
        for k, l in enumerate(range(first[gi], first[gi + 1])):
            c = offsets[l + 1] - offsets[l]
            group[l] = gi
            shift[l] = place
            for j in range(joint_offsets[gi + 1] - joint_offsets[gi]):
                members[joint_offsets[gi] + j, k] = offsets[l] + (j // place) % c
            place *= c
    jidx = np.empty((n, n_groups), np.int32)
    for i in range(n):
        for gi in range(n_groups):
            jidx[i, gi] = joint_offsets[gi]
        for l in range(n_layers):
            jidx[i, group[l]] += (idx[i, l] - offsets[l]) * shift[l]
    return jidx, members


@njit(cache=True, fastmath=FASTMATH)
def similarity_times(p, jidx, members, n_layers, dense_k, joint, hist, table, out):
    """out = K p; for the default similarity also leaves the per-layer histograms of p in `hist`.

    hist has one spare zero slot at the end (the padding bin of `members`).
    """
    n = p.shape[0]
    if dense_k.shape[0] > 0:
        out[:] = np.dot(dense_k, p)
        return
    n_groups = jidx.shape[1]
    n_joint, max_size = members.shape
    joint[:] = 0.0
    for i in range(n):
        pi = p[i]
        for gi in range(n_groups):
            joint[jidx[i, gi]] += pi
    hist[:] = 0.0
    for j in range(n_joint):
        for k in range(max_size):
            hist[members[j, k]] += joint[j]
    hist[hist.shape[0] - 1] = 0.0
    for j in range(n_joint):
        s = 0.0
        for k in range(max_size):
            s += hist[members[j, k]]
        table[j] = s
    inv_layers = 1.0 / n_layers
    for i in range(n):
        s = 0.0
        for gi in range(n_groups):
            s += table[jidx[i, gi]]
        out[i] = s * inv_layers


@njit(cache=True, fastmath=FASTMATH)
def local_rate_bound(p, kp, hist, offsets, diag_k, dense, lam_over_tau):
    """Upper bound of rho = spectral radius of (lam/tau)(diag p - p p^T) K (K PSD).

    rho = (lam/tau) lambda_max(Cov_p(x)) / L for x the one-hot code. Two bounds, both exact when a
    single layer varies: the trace, sum_i p_i K_ii - p^T K p, and, by Cauchy-Schwarz over layers,
    max_l lambda_max(diag h_l - h_l h_l^T) <= max_l min(max_c h_l(c), 1 - |h_l|^2).
    """
    n = p.shape[0]
    ptkp = 0.0
    pdiag = 0.0
    for i in range(n):
        ptkp += p[i] * kp[i]
        pdiag += p[i] * diag_k[i] if dense else p[i]
    bound = pdiag - ptkp
    if not dense:
        worst = 0.0
        for l in range(offsets.shape[0] - 1):
            peak = 0.0
            sq = 0.0
            for k in range(offsets[l], offsets[l + 1]):
                h = hist[k]
                sq += h * h
                if h > peak:
                    peak = h
            layer = min(peak, 1.0 - sq)
            if layer > worst:
                worst = layer
        bound = min(bound, worst)
    return lam_over_tau * max(bound, 0.0)


@njit(cache=True)
def dual_value(y, idx, g, log_nu, tau, lam, p, log_p):
    """Psi(y) of the dual (module docstring); fills p = p(y) and log p. No fastmath: log nu may be -inf."""
    n, n_layers = idx.shape
    smax = -np.inf
    for i in range(n):
        if log_nu[i] == -np.inf:
            log_p[i] = -np.inf
            continue
        xy = 0.0
        for l in range(n_layers):
            xy += y[idx[i, l]]
        s = log_nu[i] + (g[i] - xy) / tau
        log_p[i] = s
        if s > smax:
            smax = s
    total = 0.0
    for i in range(n):
        p[i] = np.exp(log_p[i] - smax) if log_p[i] > -np.inf else 0.0
        total += p[i]
    lse = smax + np.log(total)
    for i in range(n):
        p[i] /= total
        if log_p[i] > -np.inf:
            log_p[i] -= lse
    return n_layers / (2.0 * lam) * np.dot(y, y) + tau * lse


@njit(cache=True)
def cholesky_solve(a, b, out):
    """out = a^-1 b for a symmetric positive definite a (overwritten by its Cholesky factor)."""
    d = a.shape[0]
    for j in range(d):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        a[j, j] = np.sqrt(s)
        for i in range(j + 1, d):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / a[j, j]
    for i in range(d):
        s = b[i]
        for k in range(i):
            s -= a[i, k] * out[k]
        out[i] = s / a[i, i]
    for i in range(d - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, d):
            s -= a[k, i] * out[k]
        out[i] = s / a[i, i]


@njit(cache=True)
def dual_start(log_p, idx, g, log_nu, tau, y, gram, rhs):
    """The y whose p(y) best explains the current iterate: least squares X y ~ g + tau (log nu - log p).

    Not lam m / L: that is right only at the solution, and at large lam it amplifies the iterate's
    error into a degenerate softmax that damped Newton then leaves only slowly.
    """
    n, n_layers = idx.shape
    d = y.shape[0]
    gram[:, :] = 0.0
    rhs[:] = 0.0
    for i in range(n):
        if log_nu[i] == -np.inf or log_p[i] == -np.inf:
            continue
        r = g[i] + tau * (log_nu[i] - log_p[i])
        for l1 in range(n_layers):
            a = idx[i, l1]
            rhs[a] += r
            for l2 in range(n_layers):
                gram[a, idx[i, l2]] += 1.0
    for a in range(d):
        gram[a, a] += 1e-9 * n  # bins no candidate uses, and the per-layer constant shifts
    cholesky_solve(gram, rhs, y)


@njit(cache=True)
def dual_newton_step(y, idx, g, log_nu, tau, lam, p, log_p, hess, grad, step, y_try, p_try, log_p_try):
    """One damped Newton step on the dual Psi from y (updated in place); leaves p = p(y), log p."""
    n, n_layers = idx.shape
    d = y.shape[0]
    psi = dual_value(y, idx, g, log_nu, tau, lam, p, log_p)
    m = np.zeros(d)  # X^T p: the per-layer histograms of p
    hess[:, :] = 0.0
    for i in range(n):
        pi = p[i]
        if pi == 0.0:
            continue
        for l1 in range(n_layers):
            a = idx[i, l1]
            m[a] += pi
            for l2 in range(n_layers):
                hess[a, idx[i, l2]] += pi
    ridge = n_layers / lam
    for a in range(d):
        grad[a] = ridge * y[a] - m[a]
        for c in range(d):
            hess[a, c] = (hess[a, c] - m[a] * m[c]) / tau
        hess[a, a] += ridge
    for a in range(d):
        grad[a] = -grad[a]
    cholesky_solve(hess, grad, step)  # Newton direction
    slope = -np.dot(grad, step)      # grad . step < 0 (grad holds -grad here)
    t = 1.0
    for _ in range(60):
        for a in range(d):
            y_try[a] = y[a] + t * step[a]
        psi_try = dual_value(y_try, idx, g, log_nu, tau, lam, p_try, log_p_try)
        if psi_try <= psi + 0.25 * t * slope or -slope < 1e-13 * max(1.0, abs(psi)):
            break
        t *= 0.5
    y[:] = y_try
    p[:] = p_try
    log_p[:] = log_p_try


@njit(cache=True, fastmath=FASTMATH)
def solve(idx, offsets, dense_k, g, log_nu, tau, lam, max_k, p0, tol, max_iter, fast):
    """Equilibrium from p0 (empty: softmax(log nu + g / tau)). Returns (p, iterations, exploitability of p)."""
    n = g.shape[0]
    if p0.shape[0] == 0:
        p0 = log_nu + g / tau
        p0 = np.exp(p0 - p0.max())
    dense = dense_k.shape[0] > 0
    n_layers = idx.shape[1]
    jidx, members = group_layers(idx, offsets, max(n // JOINT_BINS_PER_CANDIDATE, 1))
    joint = np.zeros(members.shape[0])
    table = np.zeros(members.shape[0])
    hist = np.zeros(offsets[n_layers] + 1)
    kp = np.empty(n)
    log_g = np.empty(n)
    w = np.empty(n)
    diag_k = np.empty(n)
    if dense:
        for i in range(n):
            diag_k[i] = dense_k[i, i]

    p = p0 / p0.sum()
    log_p = np.empty(n)
    picard_first = False
    for i in range(n):
        log_p[i] = np.log(p[i]) if p[i] > 0.0 else -np.inf
        if p[i] == 0.0 and log_nu[i] > -np.inf:
            picard_first = True

    b = tau / (tau + lam * max_k)
    inv_tau = 1.0 / tau
    lam_over_tau = lam * inv_tau
    e_prev = np.inf
    e_window = np.inf  # E at the start of the current stall window
    newton = False
    n_bins = offsets[n_layers]
    y = np.zeros(n_bins)  # dual variable of the Newton phase
    hess = np.empty((n_bins, n_bins))
    grad = np.empty(n_bins)
    step = np.empty(n_bins)
    y_try = np.empty(n_bins)
    p_try = np.empty(n)
    log_p_try = np.empty(n)
    it = 0
    while True:
        similarity_times(p, jidx, members, n_layers, dense_k, joint, hist, table, kp)
        # log G by log-sum-exp; w keeps exp(s - max) so G itself costs no second exp.
        smax = -np.inf
        for i in range(n):
            s = log_nu[i] + (g[i] - lam * kp[i]) * inv_tau
            log_g[i] = s
            if s > smax:
                smax = s
        total = 0.0
        for i in range(n):
            w[i] = np.exp(log_g[i] - smax)
            total += w[i]
        shift = smax + np.log(total)
        e = 0.0
        for i in range(n):
            log_g[i] -= shift
            if p[i] > 0.0:
                e += p[i] * (log_p[i] - log_g[i])
        e *= tau
        if e <= tol or it >= max_iter:
            break

        if fast and it % STALL_WINDOW == 0:
            if e > STALL_FACTOR * e_window and not dense and lam > 0.0:
                fast = False  # the local step has stopped making progress
                newton = True
                dual_start(log_p, idx, g, log_nu, tau, y, hess, grad)
            e_window = e
        if picard_first:
            picard_first = False
            inv_total = 1.0 / total
            for i in range(n):
                p[i] = w[i] * inv_total
                log_p[i] = log_g[i]
        elif newton:
            dual_newton_step(y, idx, g, log_nu, tau, lam, p, log_p, hess, grad, step, y_try, p_try, log_p_try)
        elif fast and e <= e_prev:
            rho = local_rate_bound(p, kp, hist, offsets, diag_k, dense, lam_over_tau)
            a = 2.0 / (2.0 + rho)
            inv_total = 1.0 / total
            for i in range(n):
                p[i] = (1.0 - a) * p[i] + a * (w[i] * inv_total)
                log_p[i] = np.log(p[i]) if p[i] > 0.0 else -np.inf
        else:
            fast = False  # E rose under the local step: log damping for the rest of the solve
            tmax = -np.inf
            for i in range(n):
                # Branch on -inf explicitly: under fastmath's reassociation the blend of a -inf
                # term can become -inf + inf = nan.
                if log_g[i] == -np.inf or log_p[i] == -np.inf:
                    t = -np.inf
                else:
                    t = (1.0 - b) * log_p[i] + b * log_g[i]
                log_p[i] = t
                if t > tmax:
                    tmax = t
            z = 0.0
            for i in range(n):
                w[i] = np.exp(log_p[i] - tmax)
                z += w[i]
            inv_z = 1.0 / z
            lz = tmax + np.log(z)
            for i in range(n):
                p[i] = w[i] * inv_z
                log_p[i] -= lz
        e_prev = e
        it += 1
    return p, it, e
