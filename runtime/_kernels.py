"""Numba kernels behind :mod:`alscout.runtime.scoring`.

Private: the public functions validate input and carry the docstrings. Every kernel
has a plain NumPy reference in ``tests/runtime/naive_scoring.py`` that the tests
compare against.

All arithmetic is float64 whatever the input dtype, so that the small difference
``H(mean p) - mean H(p)`` keeps its digits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from alscout.runtime._numba import checking_kernel, kernel, parallel_kernel

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
def _entropy_at(a, j, scratch_p, scratch_q, bits_p, bits_q):
    """H(a) in nats for ``0 <= a <= 1``; ``j`` picks the scratch slot for the bit casts.

    Both logarithms are computed here rather than by libm, because LLVM vectorises
    this form and not a libm call: ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)),
    ``ln m = 2 atanh((m-1)/(m+1))``, and the two divisions share one reciprocal.
    The bits pass through scratch rows (``bits_*`` are their int64 views) because
    Numba has no scalar bit cast. ``ln 0`` comes out near -709, so ``0 ln 0 = 0``.
    """
    q = 1.0 - a
    scratch_p[j] = a
    scratch_q[j] = q
    b1 = bits_p[j]
    b2 = bits_q[j]
    e1 = np.float64((b1 >> 52) - 1023)
    e2 = np.float64((b2 >> 52) - 1023)
    bits_p[j] = (b1 & _MANTISSA) | _EXPONENT_ONE
    bits_q[j] = (b2 & _MANTISSA) | _EXPONENT_ONE
    m1 = scratch_p[j]
    m2 = scratch_q[j]
    big1 = np.float64(m1 > _SQRT2)
    big2 = np.float64(m2 > _SQRT2)
    m1 = m1 - 0.5 * m1 * big1
    m2 = m2 - 0.5 * m2 * big2
    shared = 1.0 / ((m1 + 1.0) * (m2 + 1.0))
    log_p = (e1 + big1) * _LN2 + _atanh_series((m1 - 1.0) * (m2 + 1.0) * shared)
    log_q = (e2 + big2) * _LN2 + _atanh_series((m2 - 1.0) * (m1 + 1.0) * shared)
    return -(a * log_p + q * log_q)


@kernel
def binary_entropy_into(p, out, scratch_p, scratch_q):
    """``out = H(p)`` for a float64 row ``p`` in [0, 1]; scratch rows of the same length."""
    bits_p = scratch_p.view(np.int64)
    bits_q = scratch_q.view(np.int64)
    for j in range(p.shape[0]):
        out[j] = _entropy_at(p[j], j, scratch_p, scratch_q, bits_p, bits_q)


@kernel
def divergence_row_into(sum_p, sum_e, inv_width, inv_height, acc, scratch_p, scratch_q):
    """``acc += H(mean p) - mean H(p)`` for one output row, from the window sums."""
    bits_p = scratch_p.view(np.int64)
    bits_q = scratch_q.view(np.int64)
    for j in range(acc.shape[0]):
        scale = inv_width[j] * inv_height
        mean_p = min(max(sum_p[j] * scale, 0.0), 1.0)
        h = _entropy_at(mean_p, j, scratch_p, scratch_q, bits_p, bits_q)
        acc[j] += h - sum_e[j] * scale


@kernel
def window_sums_into(a, b, radius, pad_a, pad_b, out_a, out_b):
    """Sums of two rows over the window ``[j-radius, j+radius]`` clipped to the row.

    The rows are copied into zero-padded scratch (``n + 2 radius + 2`` long) so the
    running sum needs no edge cases; each step adds one precomputed difference, and
    the two halves of each row run as separate chains so their adds overlap.
    """
    n = a.shape[0]
    width = 2 * radius + 1
    for t in range(radius + 1):
        pad_a[t] = 0.0
        pad_b[t] = 0.0
        pad_a[radius + n + 1 + t] = 0.0
        pad_b[radius + n + 1 + t] = 0.0
    for j in range(n):
        pad_a[radius + 1 + j] = a[j]
        pad_b[radius + 1 + j] = b[j]
    # out[j] = sum(pad[j + 1 : j + width + 1]); out[j] - out[j - 1] = pad[j + width] - pad[j]
    half = n // 2
    sa0 = 0.0
    sb0 = 0.0
    sa1 = 0.0
    sb1 = 0.0
    for t in range(width):
        sa0 += pad_a[t]
        sb0 += pad_b[t]
        sa1 += pad_a[half + t]
        sb1 += pad_b[half + t]
    for j in range(half):
        sa0 += pad_a[j + width] - pad_a[j]
        sb0 += pad_b[j + width] - pad_b[j]
        sa1 += pad_a[half + j + width] - pad_a[half + j]
        sb1 += pad_b[half + j + width] - pad_b[half + j]
        out_a[j] = sa0
        out_b[j] = sb0
        out_a[half + j] = sa1
        out_b[half + j] = sb1
    for j in range(2 * half, n):
        sa1 += pad_a[j + width] - pad_a[j]
        sb1 += pad_b[j + width] - pad_b[j]
        out_a[j] = sa1
        out_b[j] = sb1


@kernel
def _load_row_and_entropy(probs, n, k, i, p_row, e_row, t1, t2):
    for j in range(p_row.shape[0]):
        p_row[j] = probs[n, k, i, j]
    binary_entropy_into(p_row, e_row, t1, t2)


@parallel_kernel
def divergence_kernel(probs, radius, band_rows, out):
    """``out[n] = sum_k H(box_mean p_k) - box_mean H(p_k)``; probs [N,K,H,W], out [N,H,W].

    Work is split into tasks of (frame, band of rows). Within a task the output
    rows advance one at a time and every head moves its own window with them:
    rows of p and H(p) live in a per-head ring buffer of 2r+2 rows, entering and
    leaving running column sums, so each input row is converted once and only one
    output row of accumulators is live.
    """
    N, K, H, W = probs.shape
    n_bands = (H + band_rows - 1) // band_rows
    ring = 2 * radius + 2
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        p_rows = np.empty((K, ring, W))
        e_rows = np.empty((K, ring, W))
        col_p = np.zeros((K, W))
        col_e = np.zeros((K, W))
        sum_p = np.empty(W)
        sum_e = np.empty(W)
        acc = np.empty(W)
        t1 = np.empty(W)
        t2 = np.empty(W)
        pad_p = np.empty(W + 2 * radius + 2)
        pad_e = np.empty(W + 2 * radius + 2)
        inv_width = np.empty(W)
        for j in range(W):
            inv_width[j] = 1.0 / (min(W - 1, j + radius) - max(0, j - radius) + 1)
        for k in range(K):
            for i in range(max(0, r0 - radius), min(H, r0 + radius + 1)):
                slot = i % ring
                _load_row_and_entropy(probs, n, k, i, p_rows[k, slot], e_rows[k, slot], t1, t2)
                for j in range(W):
                    col_p[k, j] += p_rows[k, slot, j]
                    col_e[k, j] += e_rows[k, slot, j]
        for i in range(r0, r1):
            inv_height = 1.0 / (min(H - 1, i + radius) - max(0, i - radius) + 1)
            entering = i + radius + 1
            leaving = i - radius
            acc[:] = 0.0
            for k in range(K):
                window_sums_into(col_p[k], col_e[k], radius, pad_p, pad_e, sum_p, sum_e)
                divergence_row_into(sum_p, sum_e, inv_width, inv_height, acc, t1, t2)
                cp = col_p[k]
                ce = col_e[k]
                if entering < H:
                    slot = entering % ring
                    _load_row_and_entropy(
                        probs, n, k, entering, p_rows[k, slot], e_rows[k, slot], t1, t2
                    )
                    new_p = p_rows[k, slot]
                    new_e = e_rows[k, slot]
                    if leaving >= 0:
                        old_p = p_rows[k, leaving % ring]
                        old_e = e_rows[k, leaving % ring]
                        for j in range(W):
                            cp[j] += new_p[j] - old_p[j]
                            ce[j] += new_e[j] - old_e[j]
                    else:
                        for j in range(W):
                            cp[j] += new_p[j]
                            ce[j] += new_e[j]
                elif leaving >= 0:
                    old_p = p_rows[k, leaving % ring]
                    old_e = e_rows[k, leaving % ring]
                    for j in range(W):
                        cp[j] -= old_p[j]
                        ce[j] -= old_e[j]
            for j in range(W):
                out[n, i, j] = acc[j]


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
        h = np.empty(W)
        acc = np.empty(W)
        t1 = np.empty(W)
        t2 = np.empty(W)
        for i in range(r0, r1):
            acc[:] = 0.0
            for k in range(K):
                for j in range(W):
                    row[j] = probs[n, k, i, j]
                binary_entropy_into(row, h, t1, t2)
                for j in range(W):
                    acc[j] += h[j]
            for j in range(W):
                out[n, i, j] = acc[j]


@parallel_kernel
def mc_dropout_kernel(samples, band_rows, out):
    """``out[n] = sum_k H(mean_t p_kt) - mean_t H(p_kt)``; samples [N,T,K,H,W], out [N,H,W]."""
    N, T, K, H, W = samples.shape
    n_bands = (H + band_rows - 1) // band_rows
    inv_t = 1.0 / T
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        row = np.empty(W)
        h = np.empty(W)
        mean_p = np.empty(W)
        mean_h = np.empty(W)
        acc = np.empty(W)
        t1 = np.empty(W)
        t2 = np.empty(W)
        for i in range(r0, r1):
            acc[:] = 0.0
            for k in range(K):
                mean_p[:] = 0.0
                mean_h[:] = 0.0
                for t in range(T):
                    for j in range(W):
                        row[j] = samples[n, t, k, i, j]
                    binary_entropy_into(row, h, t1, t2)
                    for j in range(W):
                        mean_p[j] += row[j]
                        mean_h[j] += h[j]
                for j in range(W):
                    mean_p[j] = min(max(mean_p[j] * inv_t, 0.0), 1.0)
                binary_entropy_into(mean_p, h, t1, t2)
                for j in range(W):
                    acc[j] += h[j] - mean_h[j] * inv_t
            for j in range(W):
                out[n, i, j] = acc[j]


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
