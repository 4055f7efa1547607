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
#: The bits of sqrt(1/2): subtracting them before taking the exponent puts every
#: mantissa in [sqrt(1/2), sqrt(2)).
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD
# Minimax coefficients of (atanh(s) - s) / s^3 as a polynomial in s^2 for
# |s| <= (sqrt(2) - 1) / (sqrt(2) + 1): ln m = 2 atanh((m - 1) / (m + 1)) to 7e-15.
_A1 = 0.3333333334125595
_A2 = 0.1999999689040507
_A3 = 0.1428613844124187
_A4 = 0.11084974899375372
_A5 = 0.09832939289480672


@kernel
def _log(x):
    """ln x for ``0 <= x <= 1`` (float64); ``ln 0`` comes out near -709, so ``0 ln 0 = 0``.

    Written out rather than called from libm because LLVM vectorises this form and
    not a libm call: ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)), then
    ``ln m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, by a degree-11 polynomial.
    Absolute error below 1e-14 (tests/runtime/test_kernels.py).
    """
    bits = float_bits(x)
    e = (bits - _SQRT_HALF_BITS) >> 52
    m = bits_float(bits - (e << 52))
    s = (m - 1.0) / (m + 1.0)
    y = s * s
    p = _A5
    p = p * y + _A4
    p = p * y + _A3
    p = p * y + _A2
    p = p * y + _A1
    return np.float64(e) * _LN2 + 2.0 * (s + s * y * p)


@kernel
def _entropy(a):
    """H(a) in nats for ``0 <= a <= 1``."""
    q = 1.0 - a
    return -(a * _log(a) + q * _log(q))


@kernel
def add_entropy_into(p, out):
    """``out += H(p)`` elementwise for float64 rows ``p`` in [0, 1]."""
    for j in range(p.shape[0]):
        out[j] += _entropy(p[j])


@kernel
def _enter_row(src, old, col, e_new):
    """One head's input row enters the window: ``col += src - old``, ``e_new += H(src)``.

    ``src``, ``old``: float32 or float64 rows (``old`` all zeros when no row leaves);
    ``col``, ``e_new``: float64. Fused so each value is loaded and converted once.
    Returns how many values of ``src`` are outside [0, 1] or NaN: the kernel checks
    its input in the same pass.
    """
    bad = 0
    for j in range(col.shape[0]):
        p = np.float64(src[j])
        bad += not ((p >= 0.0) & (p <= 1.0))  # NaN included
        col[j] += p - np.float64(old[j])
        e_new[j] += _entropy(p)  # meaningless for a bad p, which fails the frame
    return bad


@kernel
def _advance(probs, n, entering, leaving, col, e_rows, scratch, zeros_in, zeros):
    """Move a band's column sums one row: add input row ``entering``, drop ``leaving``.

    Either may be -1 (none). ``col`` [K+1, W]: rows 0..K-1 the column sums of p per
    head, row K the column sums of ``E = sum_k H(p_k)``; ``e_rows`` [ring, W] keeps
    E of the rows in the window so a leaving row's E is not recomputed. Returns the
    number of bad values in the entering row.
    """
    K = probs.shape[1]
    ring = e_rows.shape[0]
    e_new = e_rows[entering % ring] if entering >= 0 else scratch
    e_new[:] = 0.0
    bad = 0
    for k in range(K):
        src = probs[n, k, entering] if entering >= 0 else zeros_in
        old = probs[n, k, leaving] if leaving >= 0 else zeros_in
        bad += _enter_row(src, old, col[k], e_new)
    e_old = e_rows[leaving % ring] if leaving >= 0 else zeros
    col_e = col[K]
    for j in range(col_e.shape[0]):
        col_e[j] += e_new[j] - e_old[j]
    return bad


@kernel
def _running_sums(a, b, width, n, out_a, out_b):
    """``out[j] = sum(padded[j+1 : j+1+width])`` for two zero-padded rows at once.

    A running sum is a chain of dependent adds; two rows times two halves of the
    row give four independent chains, so the adds overlap instead of waiting on
    each other. Slices, not computed indices, keep the loads free of Numba's
    negative-index checks.
    """
    half = n // 2
    lead_a = a[width:]
    lead_b = b[width:]
    a1 = a[half:]
    b1 = b[half:]
    lead_a1 = a[half + width :]
    lead_b1 = b[half + width :]
    out_a1 = out_a[half:]
    out_b1 = out_b[half:]
    sa0 = 0.0
    sb0 = 0.0
    sa1 = 0.0
    sb1 = 0.0
    for t in range(width):
        sa0 += a[t]
        sb0 += b[t]
        sa1 += a1[t]
        sb1 += b1[t]
    for j in range(half):
        sa0 += lead_a[j] - a[j]
        sb0 += lead_b[j] - b[j]
        sa1 += lead_a1[j] - a1[j]
        sb1 += lead_b1[j] - b1[j]
        out_a[j] = sa0
        out_b[j] = sb0
        out_a1[j] = sa1
        out_b1[j] = sb1
    for j in range(half, n - half):
        sa1 += lead_a1[j] - a1[j]
        sb1 += lead_b1[j] - b1[j]
        out_a1[j] = sa1
        out_b1[j] = sb1


@kernel
def _running_sums_clipped(a, b, radius, out_a, out_b):
    """``out[j] = sum(row[j-radius : j+radius+1])`` for two rows, straight from the rows.

    Needs ``n >= 4 radius + 4``. Two rows times two halves give four independent add
    chains; the edges (windows clipped to the row) run as their own short loops.
    """
    n = a.shape[0]
    half = n // 2
    # chain 0 covers [0, half), chain 1 [half, n)
    sa0 = 0.0
    sb0 = 0.0
    for t in range(radius):
        sa0 += a[t]
        sb0 += b[t]
    lead_a = a[radius:]
    lead_b = b[radius:]
    for j in range(radius + 1):  # left edge: the window only grows
        sa0 += lead_a[j]
        sb0 += lead_b[j]
        out_a[j] = sa0
        out_b[j] = sb0
    sa1 = 0.0
    sb1 = 0.0
    for t in range(half - radius, half + radius + 1):
        sa1 += a[t]
        sb1 += b[t]
    out_a[half] = sa1
    out_b[half] = sb1
    # interior: out[j] = out[j-1] + row[j+radius] - row[j-radius-1]
    steps = half - radius - 1
    add0_a = a[2 * radius + 1 :]
    add0_b = b[2 * radius + 1 :]
    add1_a = a[half + radius + 1 :]
    add1_b = b[half + radius + 1 :]
    sub1_a = a[half - radius :]
    sub1_b = b[half - radius :]
    o0_a = out_a[radius + 1 :]
    o0_b = out_b[radius + 1 :]
    o1_a = out_a[half + 1 :]
    o1_b = out_b[half + 1 :]
    for t in range(steps):
        sa0 += add0_a[t] - a[t]
        sb0 += add0_b[t] - b[t]
        sa1 += add1_a[t] - sub1_a[t]
        sb1 += add1_b[t] - sub1_b[t]
        o0_a[t] = sa0
        o0_b[t] = sb0
        o1_a[t] = sa1
        o1_b[t] = sb1
    for t in range(steps, n - radius - half - 1):  # chain 1 is one longer for odd n
        sa1 += add1_a[t] - sub1_a[t]
        sb1 += add1_b[t] - sub1_b[t]
        o1_a[t] = sa1
        o1_b[t] = sb1
    for j in range(n - radius, n):  # right edge: the window only shrinks
        sa1 -= a[j - radius - 1]
        sb1 -= b[j - radius - 1]
        out_a[j] = sa1
        out_b[j] = sb1


@kernel
def window_sums(col, radius, pad, sums):
    """``sums[k, j] = sum(col[k, j-radius : j+radius+1])``, the window clipped to the row.

    col, sums [rows, W]. Rows of at least 4 radius + 4 are summed in place; shorter
    ones are copied into zeros in ``pad`` [rows, W + 2 radius + 2] first so the running
    sums need no edge cases. Either way the cost does not depend on the radius.
    """
    rows, n = col.shape
    if n >= 4 * radius + 4:
        for k in range(0, rows - 1, 2):
            _running_sums_clipped(col[k], col[k + 1], radius, sums[k], sums[k + 1])
        if rows % 2:
            last = rows - 1
            _running_sums_clipped(col[last], col[last], radius, sums[last], sums[last])
        return
    width = 2 * radius + 1
    pad[:, : radius + 1] = 0.0
    pad[:, radius + n + 1 :] = 0.0
    for k in range(rows):
        body = pad[k, radius + 1 : radius + 1 + n]
        ck = col[k]
        for j in range(n):
            body[j] = ck[j]
    for k in range(0, rows - 1, 2):
        _running_sums(pad[k], pad[k + 1], width, n, sums[k], sums[k + 1])
    if rows % 2:
        last = rows - 1
        _running_sums(pad[last], pad[last], width, n, sums[last], sums[last])


@kernel
def _add_entropy_of_mean(sum_p, scale, acc, first):
    """``acc (=|+=) H(sum_p * scale)``: the entropy of one head's window mean."""
    if first:
        for j in range(acc.shape[0]):
            acc[j] = _entropy(min(max(sum_p[j] * scale[j], 0.0), 1.0))
    else:
        for j in range(acc.shape[0]):
            acc[j] += _entropy(min(max(sum_p[j] * scale[j], 0.0), 1.0))


@kernel
def _write_divergence(sum_p, sum_e, scale, acc, out_row, first):
    """``out_row = acc + H(mean of the last head) - mean of E``, written as float32."""
    for j in range(out_row.shape[0]):
        s = scale[j]
        h = _entropy(min(max(sum_p[j] * s, 0.0), 1.0))
        total = h if first else acc[j] + h
        out_row[j] = total - sum_e[j] * s


@parallel_kernel
def divergence_kernel(probs, radius, band_rows, out, bad):
    """``out[n] = sum_k H(box_mean p_k) - box_mean sum_k H(p_k)``; probs [N,K,H,W], out [N,H,W].

    ``probs`` must be C-contiguous (the public function makes sure): rows are then
    contiguous and every loop vectorises. The second term is linear, so the heads'
    entropies are summed before the box filter: one running sum of
    ``E = sum_k H(p_k)`` instead of K. Work is split into tasks of (frame, band of
    rows); within a task the output rows advance one at a time, keeping running
    column sums of p per head and of E (``_advance``), then taking the K + 1
    horizontal window sums (``window_sums``) and the entropies of the window means.
    Each input value is converted and its entropy taken once. ``bad[task]`` counts
    the values outside [0, 1] (or NaN) among the task's own rows; the scores are
    meaningless unless ``bad`` is all zero.
    """
    N, K, H, W = probs.shape
    n_bands = (H + band_rows - 1) // band_rows
    ring = 2 * radius + 2
    for task in prange(N * n_bands):
        n = task // n_bands
        r0 = (task % n_bands) * band_rows
        r1 = min(H, r0 + band_rows)
        e_rows = np.empty((ring, W))
        col = np.zeros((K + 1, W))
        sums = np.empty((K + 1, W))
        pad = np.empty((K + 1, W + 2 * radius + 2))
        zeros_in = np.zeros(W, probs.dtype)
        zeros = np.zeros(W)
        scratch = np.empty(W)
        acc = np.empty(W)
        scale = np.empty(W)
        inv_width = np.empty(W)
        for j in range(W):
            inv_width[j] = 1.0 / (min(W - 1, j + radius) - max(0, j - radius) + 1)
        for i in range(max(0, r0 - radius), min(H, r0 + radius + 1)):
            outside = _advance(probs, n, i, -1, col, e_rows, scratch, zeros_in, zeros)
            if r0 <= i < r1:
                bad[task] += outside
        for i in range(r0, r1):
            inv_height = 1.0 / (min(H - 1, i + radius) - max(0, i - radius) + 1)
            for j in range(W):
                scale[j] = inv_width[j] * inv_height
            window_sums(col, radius, pad, sums)
            for k in range(K - 1):
                _add_entropy_of_mean(sums[k], scale, acc, k == 0)
            _write_divergence(sums[K - 1], sums[K], scale, acc, out[n, i], K == 1)
            entering = i + radius + 1
            leaving = i - radius
            if i + 1 < r1 and (entering < H or leaving >= 0):
                outside = _advance(
                    probs,
                    n,
                    entering if entering < H else -1,
                    leaving,
                    col,
                    e_rows,
                    scratch,
                    zeros_in,
                    zeros,
                )
                if entering < r1:
                    bad[task] += outside


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
