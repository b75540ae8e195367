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
    the rest of the solve as soon as E rises.
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

        if picard_first:
            picard_first = False
            inv_total = 1.0 / total
            for i in range(n):
                p[i] = w[i] * inv_total
                log_p[i] = log_g[i]
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
