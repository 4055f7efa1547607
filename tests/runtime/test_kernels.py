"""The scoring kernels' building blocks against plain NumPy (private API, on purpose)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from alscout.runtime import _kernels

from naive.scoring import naive_entropy, naive_pixel_scores


@njit
def _logs(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _kernels._log(x[i])
    return out


def _probe_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = np.array([0.0, 1.0, 0.5, 0.25, np.sqrt(0.5), 1e-300, 5e-324, 1e-8, 1 - 1e-16])
    logspaced = 10.0 ** rng.uniform(-300, 0, 20_000)
    near_one = 1.0 - 10.0 ** rng.uniform(-16, -1, 20_000)
    # Both sides of every mantissa boundary the range reduction switches at.
    boundaries = np.sqrt(0.5) * 2.0 ** -np.arange(0, 60)
    around = np.concatenate([np.nextafter(boundaries, 0), boundaries, np.nextafter(boundaries, 1)])
    return np.concatenate([edges, rng.random(50_000), logspaced, near_one, around])


def test_log_is_accurate_on_the_unit_interval():
    x = _probe_values()
    positive = x[x >= 1e-300]
    # 1e-14 absolute, plus the rounding of e ln 2 where ln x is large (ln 1e-300 = -690).
    np.testing.assert_allclose(_logs(positive), np.log(positive), rtol=1e-15, atol=1e-14)
    # 0 ln 0 = 0: ln 0 comes out finite, near -709 (and subnormals stay finite too).
    assert np.all(np.isfinite(_logs(np.array([0.0, 5e-324]))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_entropy_matches_numpy_to_1e_14(dtype):
    x = np.clip(_probe_values(), 0, 1).astype(dtype).astype(np.float64)
    got = np.zeros_like(x)
    _kernels.add_entropy_into(x, got)
    np.testing.assert_allclose(got, naive_entropy(x), rtol=0, atol=1e-14)
    assert got[x == 0.0].max() == 0.0 and got[x == 1.0].max() == 0.0


@pytest.mark.parametrize("width", [1, 2, 3, 7, 18, 19, 20, 39, 40, 41, 64, 123, 124, 125, 640, 641])
@pytest.mark.parametrize("radius", [0, 1, 4, 9, 30])
@pytest.mark.parametrize("rows", [1, 2, 3, 6])
def test_window_sums_equal_clipped_box_sums(width, radius, rows):
    rng = np.random.default_rng(width * 100 + radius * 10 + rows)
    col = rng.random((rows, width))
    pad = np.full((rows, width + 2 * radius + 2), np.nan)  # scratch: garbage must not leak
    sums = np.empty((rows, width))
    _kernels.window_sums(col, radius, pad, sums)
    expected = np.array(
        [[c[max(0, j - radius) : j + radius + 1].sum() for j in range(width)] for c in col]
    )
    np.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("band_rows", [1, 2, 5, 64])
def test_divergence_kernel_is_the_same_for_any_band_split(band_rows):
    rng = np.random.default_rng(band_rows)
    probs = rng.random((2, 3, 23, 17)).astype(np.float32)
    out = np.empty((2, 23, 17), np.float32)
    bands = (23 + band_rows - 1) // band_rows
    bad = np.zeros(2 * bands, np.int64)
    _kernels.divergence_kernel(probs, 4, band_rows, out, bad)
    assert not bad.any()
    for n in range(2):
        np.testing.assert_allclose(out[n], naive_pixel_scores(probs[n], 4), rtol=1e-5, atol=1e-9)


def test_divergence_kernel_counts_each_bad_value_once_whatever_the_bands():
    rng = np.random.default_rng(7)
    probs = rng.random((1, 2, 30, 11)).astype(np.float32)
    probs[0, 0, 0, 0] = np.nan
    probs[0, 1, 17, 3] = -0.5
    probs[0, 0, 29, 10] = 1.5
    for band_rows in (1, 4, 7, 30):
        bad = np.zeros((30 + band_rows - 1) // band_rows, np.int64)
        _kernels.divergence_kernel(probs, 9, band_rows, np.empty((1, 30, 11), np.float32), bad)
        assert bad.sum() == 3, band_rows


def test_a_huge_radius_scores_like_the_whole_frame():
    from alscout.runtime.scoring import pixel_scores

    probs = np.random.default_rng(3).random((2, 9, 13)).astype(np.float32)
    whole = pixel_scores(probs, radius=13)
    np.testing.assert_array_equal(pixel_scores(probs, radius=10**9), whole)
    np.testing.assert_allclose(whole, naive_pixel_scores(probs, 13), rtol=1e-5, atol=1e-9)
