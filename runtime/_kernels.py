"""Numba kernels behind :mod:`alscout.runtime.scoring`.

Private: the public functions validate input and carry the docstrings. Every kernel
has a plain NumPy reference in ``tests/naive/scoring.py`` that the tests
compare against.

All arithmetic is float64 whatever the input dtype, so that the small difference
``H(mean p) - mean H(p)`` keeps its digits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from alscout.runtime._numba import bits_float, checking_kernel, float_bits, kernel, parallel_kernel

_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951
_MANTISSA = 0x000FFFFFFFFFFFFF
_EXPONENT_ONE = 0x3FF0000000000000


@kernel
def _atanh_series(s):
    """``2 atanh(s)`` for ``|s| < 0.172``: eight terms, error below 1e-14."""
    s2 = s * s
    p = 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return 2.0 * s * p


@kernel
def _entropy(a):
    """H(a) in nats for ``0 <= a <= 1``.

    Both logarithms are computed here rather than by libm, because LLVM vectorises
    this form and not a libm call: ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)),
    ``ln m = 2 atanh((m-1)/(m+1))``, and the two divisions share one reciprocal.
    ``ln 0`` comes out near -709, so ``0 ln 0 = 0``.
    """
    q = 1.0 - a
    b1 = float_bits(a)
    b2 = float_bits(q)
    e1 = np.float64((b1 >> 52) - 1023)
    e2 = np.float64((b2 >> 52) - 1023)
    m1 = bits_float((b1 & _MANTISSA) | _EXPONENT_ONE)
    m2 = bits_float((b2 & _MANTISSA) | _EXPONENT_ONE)
    big1 = np.float64(m1 > _SQRT2)
    big2 = np.float64(m2 > _SQRT2)
    m1 = m1 - 0.5 * m1 * big1
    m2 = m2 - 0.5 * m2 * big2
    shared = 1.0 / ((m1 + 1.0) * (m2 + 1.0))
    log_p = (e1 + big1) * _LN2 + _atanh_series((m1 - 1.0) * (m2 + 1.0) * shared)
    log_q = (e2 + big2) * _LN2 + _atanh_series((m2 - 1.0) * (m1 + 1.0) * shared)
    return -(a * log_p + q * log_q)


@kernel
def add_entropy_into(p, out):
    """``out += H(p)`` elementwise for float64 rows ``p`` in [0, 1]."""
    for j in range(p.shape[0]):
        out[j] += _entropy(p[j])


@kernel
def window_sum_into(a, radius, pad, out):
    """``out[j] = sum(a[j-radius : j+radius+1])``, the window clipped to the row.

    The row is copied into zero-padded scratch (``n + 2 radius + 2`` long) so the
    running sum needs no edge cases; each step adds one precomputed difference, and
    the two halves of the row run as separate chains so their adds overlap.
    """
    n = a.shape[0]
    width = 2 * radius + 1
    for t in range(radius + 1):
        pad[t] = 0.0
        pad[radius + n + 1 + t] = 0.0
    for j in range(n):
        pad[radius + 1 + j] = a[j]
    # out[j] = sum(pad[j + 1 : j + width + 1]); out[j] - out[j - 1] = pad[j + width] - pad[j]
    half = n // 2
    s0 = 0.0
    s1 = 0.0
    for t in range(width):
        s0 += pad[t]
        s1 += pad[half + t]
    for j in range(half):
        s0 += pad[j + width] - pad[j]
        s1 += pad[half + j + width] - pad[half + j]
        out[j] = s0
        out[half + j] = s1
    for j in range(2 * half, n):
        s1 += pad[j + width] - pad[j]
        out[j] = s1


@kernel
def _enter_row(probs, n, k, i, leaving, col_p, row):
    """Move head k's column sums down: add input row ``i``, drop row ``leaving`` (if >= 0).

    Row ``i`` is left in ``row`` as float64. Returns how many of its values are not
    in [0, 1] (NaN included), so the kernel checks its input in the same pass.
    """
    bad = 0
    if leaving >= 0:
        for j in range(row.shape[0]):
            p = np.float64(probs[n, k, i, j])
            bad += not (p >= 0.0 and p <= 1.0)
            col_p[j] += p - np.float64(probs[n, k, leaving, j])
            row[j] = p
    else:
        for j in range(row.shape[0]):
            p = np.float64(probs[n, k, i, j])
            bad += not (p >= 0.0 and p <= 1.0)
            col_p[j] += p
            row[j] = p
    return bad


@kernel
def _add_entropy_of_mean(sum_p, inv_width, inv_height, acc):
    """``acc += H(window mean of p)`` from the window sums of one head."""
    for j in range(acc.shape[0]):
        mean_p = min(max(sum_p[j] * (inv_width[j] * inv_height), 0.0), 1.0)
        acc[j] += _entropy(mean_p)


@parallel_kernel
def divergence_kernel(probs, radius, band_rows, out, bad):
    """``out[n] = sum_k H(box_mean p_k) - box_mean sum_k H(p_k)``; probs [N,K,H,W], out [N,H,W].

    The second term is linear, so the heads' entropies are summed before the box
    filter: one running sum of ``E = sum_k H(p_k)`` instead of K. Work is split into
    tasks of (frame, band of rows); within a task the output rows advance one at a
    time, each head keeping running column sums of p (the leaving row is read back
    from ``probs``) and a ring of 2r+2 rows of E keeping those of E, so every input
    value is converted and its entropy taken once. ``bad[task]`` counts the values
    outside [0, 1] (or NaN) among the task's own rows; the scores are meaningless
    unless ``bad`` is all zero.
    """
    N, K, H, W = probs.shape
    n_bands = (H + band_rows - 1) // band_rows
    ring = 2 * radius + 2
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        e_rows = np.empty((ring, W))
        col_p = np.zeros((K, W))
        col_e = np.zeros(W)
        row = np.empty(W)
        sums = np.empty(W)
        acc = np.empty(W)
        pad = np.empty(W + 2 * radius + 2)
        inv_width = np.empty(W)
        for j in range(W):
            inv_width[j] = 1.0 / (min(W - 1, j + radius) - max(0, j - radius) + 1)
        for i in range(max(0, r0 - radius), min(H, r0 + radius + 1)):
            e_new = e_rows[i % ring]
            e_new[:] = 0.0
            for k in range(K):
                outside = _enter_row(probs, n, k, i, -1, col_p[k], row)
                if r0 <= i < r1:
                    bad[task] += outside
                add_entropy_into(row, e_new)
            for j in range(W):
                col_e[j] += e_new[j]
        for i in range(r0, r1):
            inv_height = 1.0 / (min(H - 1, i + radius) - max(0, i - radius) + 1)
            acc[:] = 0.0
            for k in range(K):
                window_sum_into(col_p[k], radius, pad, sums)
                _add_entropy_of_mean(sums, inv_width, inv_height, acc)
            window_sum_into(col_e, radius, pad, sums)
            for j in range(W):
                out[n, i, j] = acc[j] - sums[j] * (inv_width[j] * inv_height)
            entering = i + radius + 1
            leaving = i - radius
            if leaving >= 0:
                e_old = e_rows[leaving % ring]
                for j in range(W):
                    col_e[j] -= e_old[j]
            if entering < H:
                e_new = e_rows[entering % ring]
                e_new[:] = 0.0
                for k in range(K):
                    outside = _enter_row(probs, n, k, entering, leaving, col_p[k], row)
                    if entering < r1:
                        bad[task] += outside
                    add_entropy_into(row, e_new)
                for j in range(W):
                    col_e[j] += e_new[j]
            elif leaving >= 0:
                for k in range(K):
                    ck = col_p[k]
                    for j in range(W):
                        ck[j] -= np.float64(probs[n, k, leaving, j])


@parallel_kernel
def entropy_kernel(probs, band_rows, out):
    """``out[n] = sum_k H(p_k)``; probs [N,K,H,W], out [N,H,W]."""
    N, K, H, W = probs.shape
    n_bands = (H + band_rows - 1) // band_rows
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        row = np.empty(W)
        acc = np.empty(W)
        for i in range(r0, r1):
            acc[:] = 0.0
            for k in range(K):
                for j in range(W):
                    row[j] = probs[n, k, i, j]
                add_entropy_into(row, acc)
            for j in range(W):
                out[n, i, j] = acc[j]


@parallel_kernel
def mc_dropout_kernel(samples, band_rows, out):
    """``out[n] = sum_k H(mean_t p_kt) - mean_t H(p_kt)``; samples [N,T,K,H,W], out [N,H,W].

    As in :func:`divergence_kernel`, the linear term is summed over heads first.
    """
    N, T, K, H, W = samples.shape
    n_bands = (H + band_rows - 1) // band_rows
    inv_t = 1.0 / T
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        row = np.empty(W)
        mean_p = np.empty(W)
        sum_h = np.empty(W)
        acc = np.empty(W)
        for i in range(r0, r1):
            acc[:] = 0.0
            sum_h[:] = 0.0
            for k in range(K):
                mean_p[:] = 0.0
                for t in range(T):
                    for j in range(W):
                        row[j] = samples[n, t, k, i, j]
                        mean_p[j] += row[j]
                    add_entropy_into(row, sum_h)
                for j in range(W):
                    mean_p[j] = min(max(mean_p[j] * inv_t, 0.0), 1.0)
                add_entropy_into(mean_p, acc)
            for j in range(W):
                out[n, i, j] = acc[j] - sum_h[j] * inv_t


@parallel_kernel
def region_max_mean_kernel(score_maps, region, out):
    """``out[n]`` = mean over R x R tiles (edge tiles smaller) of the tile maximum."""
    N, H, W = score_maps.shape
    tiles_y = (H + region - 1) // region
    tiles_x = (W + region - 1) // region
    for n in prange(N):
        maxima = np.empty(tiles_x)
        total = 0.0
        for ty in range(tiles_y):
            maxima[:] = -np.inf
            for i in range(ty * region, min(H, (ty + 1) * region)):
                for tx in range(tiles_x):
                    m = maxima[tx]
                    for j in range(tx * region, min(W, (tx + 1) * region)):
                        m = max(m, np.float64(score_maps[n, i, j]))
                    maxima[tx] = m
            for tx in range(tiles_x):
                total += maxima[tx]
        out[n] = total / (tiles_y * tiles_x)


@parallel_kernel
def mean_kernel(score_maps, out):
    """``out[n]`` = mean of ``score_maps[n]`` accumulated in float64."""
    N, H, W = score_maps.shape
    for n in prange(N):
        total = 0.0
        for i in range(H):
            for j in range(W):
                total += score_maps[n, i, j]
        out[n] = total / (H * W)


@checking_kernel
def count_outside_unit_interval(flat):
    """(number of NaNs, number of values below 0, number above 1) in a 1-D array."""
    nan = 0
    below = 0
    above = 0
    for i in prange(flat.shape[0]):
        v = flat[i]
        nan += v != v
        below += v < 0.0
        above += v > 1.0
    return nan, below, above
