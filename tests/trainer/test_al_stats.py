"""The benchmark's statistics against plain reference computations (SciPy, loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from alscout.errors import InvalidInputError
from alscout.trainer.al.stats import (
    block_bootstrap_spearman,
    circular_block_indices,
    default_block,
    error_rate,
    paired_difference,
    pool_rank_checks,
    rank_rng,
    spearman_rows,
    student_t_quantile,
)


@pytest.mark.parametrize(
    ("df", "p", "table"),
    [
        (1, 0.95, 6.3138),
        (2, 0.95, 2.9200),
        (4, 0.95, 2.1318),
        (9, 0.95, 1.8331),
        (4, 0.05, -2.1318),
    ],
)
def test_student_t_quantile_matches_the_printed_table(df: int, p: float, table: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(table, abs=1e-4)


def test_student_t_quantile_rejects_bad_input() -> None:
    assert student_t_quantile(0.5, 3) == 0.0
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(InvalidInputError):
            student_t_quantile(p, df)  # type: ignore[arg-type]


def test_paired_difference_known_t_case() -> None:
    # d = 1, 2, 3: mean 2, sd 1, t_{0.95, 2} = 2.919986 -> half-width 2.919986 / sqrt(3)
    d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 2.919985580355516 / math.sqrt(3)
    assert (d.mean, d.n, d.wins) == (2.0, 3, 0)
    assert d.low == pytest.approx(2.0 - half, abs=1e-9)
    assert d.high == pytest.approx(2.0 + half, abs=1e-9)


def test_paired_difference_matches_scipy_t_interval() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=7), rng.normal(size=7)
    d = a - b
    low, high = scipy_stats.t.interval(0.9, 6, loc=d.mean(), scale=scipy_stats.sem(d))
    got = paired_difference(list(a), list(b))
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-10), pytest.approx(high, abs=1e-10))
    assert got.wins == int((d < 0).sum())


def test_a_constant_shift_has_a_zero_width_interval() -> None:
    d = paired_difference([0.40, 0.50, 0.30, 0.45], [0.50, 0.60, 0.40, 0.55])
    assert d.mean == pytest.approx(-0.1)
    assert d.low == pytest.approx(-0.1) and d.high == pytest.approx(-0.1)
    assert (d.n, d.wins) == (4, 4)


def test_one_seed_has_no_interval_and_nan_pairs_drop_out() -> None:
    one = paired_difference([0.5], [0.7])
    assert one.mean == pytest.approx(-0.2) and math.isnan(one.low) and math.isnan(one.high)
    assert (one.n, one.wins) == (1, 1)
    assert paired_difference([0.5, float("nan")], [0.7, 0.1]).n == 1
    none = paired_difference([], [])
    assert none.n == 0 and math.isnan(none.mean)
    with pytest.raises(InvalidInputError):
        paired_difference([1.0], [1.0, 2.0])


def test_spearman_rows_matches_scipy_with_ties_and_skips_missing() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 40))
    y = rng.integers(0, 5, size=(6, 40)).astype(float)  # many ties, like error counts
    expected = [scipy_stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    assert spearman_rows(x, y) == pytest.approx(expected, abs=1e-12)
    x[0, :10] = np.nan  # missing frames drop out of the row
    assert spearman_rows(x, y)[0] == pytest.approx(
        scipy_stats.spearmanr(x[0, 10:], y[0, 10:]).statistic, abs=1e-12
    )
    assert np.isnan(spearman_rows(x[1], np.ones(40))[0])
    assert np.isnan(spearman_rows(np.array([1.0]), np.array([2.0]))[0])


def test_blocks_are_runs_of_consecutive_frames_that_wrap_around() -> None:
    idx = circular_block_indices(50, 7, 20, np.random.default_rng(0))
    assert idx.shape == (20, 50) and idx.min() >= 0 and idx.max() <= 49
    blocks = idx[:, :49].reshape(20, 7, 7)
    assert np.isin(np.diff(blocks, axis=2), [1, -49]).all()  # 49 -> 0 wraps
    whole = circular_block_indices(5, 9, 3, np.random.default_rng(0))  # cut to n: rotations
    assert all(sorted(row) == [0, 1, 2, 3, 4] for row in whole.tolist())
    with pytest.raises(InvalidInputError):
        circular_block_indices(0, 1, 1, np.random.default_rng(0))


def test_every_frame_is_drawn_equally_often() -> None:
    # the point of circular blocks: the first and last frames are not under-drawn
    idx = circular_block_indices(100, 20, 4000, np.random.default_rng(3))
    counts = np.bincount(idx.ravel(), minlength=100) / 4000
    assert counts[:5].mean() == pytest.approx(1.0, abs=0.05)
    assert counts[-5:].mean() == pytest.approx(1.0, abs=0.05)
    assert counts[45:55].mean() == pytest.approx(1.0, abs=0.05)


def test_block_length_one_is_the_iid_bootstrap() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=80)
    y = np.round(x + rng.normal(size=80))
    check = block_bootstrap_spearman(x, y, np.random.default_rng(4), block=1, resamples=300)
    # the reference: a loop of iid resamples with the same draws, SciPy's Spearman
    draws = np.random.default_rng(4).integers(0, 80, size=(300, 80))
    values = [scipy_stats.spearmanr(x[d], y[d]).statistic for d in draws]
    low, high = np.quantile(values, [0.05, 0.95])
    assert check.rho == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert (check.low, check.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high))
    # and SciPy's own percentile bootstrap (other draws) agrees to sampling error
    ref = scipy_stats.bootstrap(
        (x, y), lambda a, b: scipy_stats.spearmanr(a, b).statistic, paired=True,
        vectorized=False, n_resamples=300, confidence_level=0.9, method="percentile",
        random_state=np.random.default_rng(9),
    ).confidence_interval  # fmt: skip
    assert abs(check.low - ref.low) < 0.05 and abs(check.high - ref.high) < 0.05


def test_blocks_widen_the_interval_of_autocorrelated_frames() -> None:
    # two slowly varying, independent series (people linger for many frames): the iid
    # bootstrap treats 600 frames as 600 independent ones and is far too narrow
    rng = np.random.default_rng(2)
    kernel = np.ones(40) / 40
    x = np.convolve(rng.normal(size=640), kernel, "valid")[:600]
    y = np.convolve(rng.normal(size=640), kernel, "valid")[:600]
    iid = block_bootstrap_spearman(x, y, np.random.default_rng(0), block=1)
    blocks = block_bootstrap_spearman(x, y, np.random.default_rng(0))
    assert blocks.block == default_block(600) == 24
    assert (blocks.high - blocks.low) > 2 * (iid.high - iid.low)


def test_runs_share_the_blocks_and_identical_runs_change_nothing() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=120)
    y = x + rng.normal(size=120)
    one = block_bootstrap_spearman(x, y, np.random.default_rng(1), block=10)
    two = block_bootstrap_spearman([x, x], [y, y], np.random.default_rng(1), block=10)
    assert (two.rho, two.low, two.high, two.runs) == (one.rho, one.low, one.high, 2)
    other = x + rng.normal(size=120)
    mixed = block_bootstrap_spearman([x, other], [y, y], np.random.default_rng(1), block=10)
    alone = block_bootstrap_spearman(other, y, np.random.default_rng(1), block=10)
    assert mixed.rho == pytest.approx((one.rho + alone.rho) / 2)


def test_bootstrap_inputs_are_checked() -> None:
    rng = np.random.default_rng(0)
    plain = block_bootstrap_spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], rng, block=2)
    assert plain.runs == 1 and plain.rho == pytest.approx(0.8)
    with pytest.raises(InvalidInputError):
        block_bootstrap_spearman([np.ones(4), np.ones(5)], [np.ones(4), np.ones(5)], rng)
    with pytest.raises(InvalidInputError):
        block_bootstrap_spearman([np.ones(4)], [np.ones(4), np.ones(4)], rng)


def test_error_rate_defines_zero_over_zero_as_zero() -> None:
    fp = np.array([0, 1, 2, 0, -1])
    fn = np.array([0, 0, 1, 3, 0])
    gt = np.array([0, 0, 4, 3, 2])
    rate = error_rate(fp, fn, gt)
    assert rate[:4].tolist() == [0.0, 1.0, 0.5, 1.0] and np.isnan(rate[4])


def test_pool_rank_checks_lay_runs_on_the_pool_timeline() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(size=60)
    fp = rng.integers(0, 3, size=60)
    fn = rng.integers(0, 3, size=60)
    gt = rng.integers(0, 5, size=60)
    keep = np.setdiff1d(np.arange(60), [3, 17, 40])  # labeled frames are not in the pool
    frames = {
        "pool_size": 60, "positions": keep.tolist(), "z": z[keep].tolist(),
        "false_positives": fp[keep].tolist(), "false_negatives": fn[keep].tolist(),
        "ground_truth": gt[keep].tolist(),
    }  # fmt: skip
    checks = pool_rank_checks([frames], lambda: rank_rng(2, "divergence"))
    errors = (fp + fn)[keep].astype(float)
    rate = error_rate(fp, fn, gt)[keep]
    assert checks["errors"].rho == pytest.approx(scipy_stats.spearmanr(z[keep], errors).statistic)
    assert checks["error_rate"].rho == pytest.approx(scipy_stats.spearmanr(z[keep], rate).statistic)
    assert checks["errors"].frames == 60 and checks["errors"].block == 8
    assert checks["errors"].low <= checks["errors"].rho <= checks["errors"].high
    again = pool_rank_checks([frames], lambda: rank_rng(2, "divergence"))
    assert again == checks  # seeded by cycle and method
