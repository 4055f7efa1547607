"""The statistics of the benchmark: paired differences over seeds, rank checks over frames.

NumPy and SciPy (no PyTorch), so a summary can be rebuilt wherever the run
folders are. Two questions, two tools:

- **Is method A better than method B?** Each seed runs both methods from the same
  ``w_l``, so the runs are paired by seed: :func:`paired_difference` gives the mean
  of the per-seed differences ``d_i = a_i - b_i`` and its Student-t confidence
  interval ``mean(d) -/+ t_{(1 + level) / 2, n - 1} * sd(d) / sqrt(n)`` (``sd``: the
  sample standard deviation, ddof = 1). One seed has no interval ("n/a").
- **Does z rank the pool's frames by the detector's errors?** Spearman's rank
  correlation of z and a per-frame error measure over the unlabeled pool, with a
  block-bootstrap interval (:func:`block_bootstrap_spearman`): neighbouring frames of
  a video show the same people and are not independent, so the bootstrap resamples
  blocks of ``block`` consecutive frames (video order) instead of single frames, and
  takes the 90% percentile interval of the resampled correlations. The blocks are
  circular (Politis and Romano 1992: a block may run past the last frame into the
  first), so every frame is drawn equally often; with the plain moving-block bootstrap
  (Kuensch 1989) the first and last ``block - 1`` frames are drawn less often, and on
  the PETS09 pool, whose crowd changes along the video, that shifted the resampled
  correlations by 0.04-0.08 from the estimate at 17-frame blocks.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alscout.errors import InvalidInputError

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "PairedDifference",
    "RankCheck",
    "student_t_quantile",
    "paired_difference",
    "default_block",
    "circular_block_indices",
    "spearman_rows",
    "block_bootstrap_spearman",
    "error_rate",
    "RANK_CHECKS",
    "rank_rng",
    "pool_rank_checks",
]

#: Confidence level of every interval of the benchmark.
LEVEL = 0.90
#: Bootstrap resamples of a rank check.
RESAMPLES = 1000


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of the paired differences a - b and its interval [``low``, ``high``]
    (NaN with fewer than 2 pairs; ``mean`` NaN with none); ``n`` pairs, ``wins``:
    pairs with a < b (for miss rates: a is better)."""

    mean: float
    low: float
    high: float
    n: int
    wins: int


@dataclass(frozen=True)
class RankCheck:
    """Spearman's ``rho`` (the mean over runs of each run's correlation on all its
    frames) and its bootstrap interval [``low``, ``high``] (NaN when no resample gave a
    correlation); ``runs`` and ``frames`` (timeline length) it was computed on,
    ``block`` length and ``resamples`` of the bootstrap."""

    rho: float
    low: float
    high: float
    runs: int
    frames: int
    block: int
    resamples: int


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with integer ``df`` >= 1 degrees
    of freedom (SciPy's)."""
    from scipy.stats import t as student_t

    if not 0.0 < p < 1.0:
        raise InvalidInputError(f"p must be in (0, 1), got {p}")
    if int(df) != df or df < 1:
        raise InvalidInputError(f"df must be an integer >= 1, got {df}")
    return float(student_t.ppf(p, int(df)))


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = LEVEL
) -> PairedDifference:
    """Mean of ``a[i] - b[i]`` with its two-sided Student-t interval at ``level``.

    ``a``, ``b``: one value per seed, in the same seed order; pairs where either is
    not finite are dropped.
    """
    if len(a) != len(b):
        raise InvalidInputError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level}")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, 0)
    mean, wins = float(d.mean()), int((d < 0).sum())
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1, wins)
    half = student_t_quantile((1.0 + level) / 2.0, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, wins)


def default_block(frames: int) -> int:
    """The default block length: ``round(sqrt(frames))``, at least 1.

    24 frames for the 600-frame PETS09 pool, about 3.5 s at its 7 fps: the time a
    pedestrian takes to cross a good part of the view, the scale on which the frames'
    errors are correlated. The usual rates in the literature are n^(1/3) to
    n^(1/2); the longer one is taken, since a person stays in view for tens of frames.
    """
    return max(1, round(math.sqrt(frames)))


def circular_block_indices(
    n: int, block: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Circular block bootstrap (Politis and Romano 1992) of a series of ``n``:
    ``[resamples, n]`` int64 indices, each row ``ceil(n / block)`` blocks of ``block``
    consecutive indices modulo n (a block may wrap from n - 1 to 0) whose starts are
    drawn uniformly from 0 .. n - 1, laid end to end and cut to n. Every index is drawn
    equally often in expectation. With ``block`` = 1 this is the ordinary (iid)
    bootstrap: ``rng.integers(0, n, (resamples, n))``. ``block`` larger than ``n`` is
    cut to ``n``."""
    if n < 1 or block < 1 or resamples < 1:
        raise InvalidInputError(f"need n, block, resamples >= 1, got {n}, {block}, {resamples}")
    block = min(block, n)
    count = -(-n // block)
    starts = rng.integers(0, n, size=(resamples, count))
    rows = (starts[:, :, None] + np.arange(block, dtype=np.int64)) % n
    return rows.reshape(resamples, count * block)[:, :n].astype(np.int64)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis of ``values [R, n]``, ties sharing their average."""
    rows, n = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    starts = np.ones((rows, n), bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # a group never spans two rows
    position = np.tile(np.arange(1, n + 1, dtype=np.float64), rows)
    average = np.bincount(group, weights=position) / np.bincount(group)
    ranks = np.empty((rows, n))
    np.put_along_axis(ranks, order, average[group].reshape(rows, n), axis=1)
    return ranks


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each row of ``x [R, n]`` and ``y [R, n]`` (or of
    two ``[n]`` arrays: ``[1]``) over the pairs where both are finite, ties sharing
    their average rank. ``[R]`` float64; NaN where fewer than 2 pairs or either side is
    constant."""
    a, b = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise InvalidInputError(f"spearman_rows needs equal [R, n] arrays: {a.shape}, {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    # missing pairs go last (+inf ties), so the others keep ranks 1..m, then drop out
    ra = _average_ranks(np.where(valid, a, np.inf))
    rb = _average_ranks(np.where(valid, b, np.inf))
    m = valid.sum(axis=1)
    safe = np.maximum(m, 1)
    da = np.where(valid, ra - (ra * valid).sum(axis=1, keepdims=True) / safe[:, None], 0.0)
    db = np.where(valid, rb - (rb * valid).sum(axis=1, keepdims=True) / safe[:, None], 0.0)
    va, vb = (da * da).sum(axis=1), (db * db).sum(axis=1)
    ok = (m >= 2) & (va > 1e-12) & (vb > 1e-12)
    rho = np.full(len(m), np.nan)
    rho[ok] = (da * db).sum(axis=1)[ok] / np.sqrt(va[ok] * vb[ok])
    return np.clip(rho, -1.0, 1.0)


def _runs(values: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One ``[n]`` series, or a ``[runs, n]`` array or sequence of series -> a list of
    float64 arrays."""
    if isinstance(values, np.ndarray):
        rows = [values] if values.ndim == 1 else list(values)
    else:
        rows = list(values)
        if rows and np.ndim(rows[0]) == 0:  # a plain sequence of numbers: one series
            rows = [np.asarray(rows)]
    return [np.asarray(r, np.float64) for r in rows]


def block_bootstrap_spearman(
    x: np.ndarray | Sequence[np.ndarray],
    y: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    block: int | None = None,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> RankCheck:
    """Spearman's rank correlation of ``x`` and ``y`` with a circular block-bootstrap
    percentile interval.

    Args:
        x, y: ``[n]`` values per frame in video order, or one ``[n]`` array per run
            (seeds) over the same frames, equal lengths; NaN marks a frame that is
            not in a run's sample (e.g. already labeled).
        rng: the generator of the block starts (seeded by the caller).
        block: block length in frames; default :func:`default_block` of n.
        resamples: bootstrap resamples R.
        level: two-sided level of the interval.

    Returns:
        ``rho``: the mean over runs of each run's correlation on all its frames.
        Interval: each resample draws one set of blocks (:func:`circular_block_indices`)
        shared by every run, so the runs see the same stretches of video; the
        resample's value is the mean over runs of their correlations on it (runs
        whose resample is constant are left out; a resample with none is dropped);
        [low, high] are the (1 - level) / 2 and (1 + level) / 2 quantiles (NumPy's
        linear interpolation) of the kept values. The interval is conditional on the
        trained detectors: what it resamples is the frames.
    """
    xs, ys = _runs(x), _runs(y)
    if not xs or len(xs) != len(ys):
        raise InvalidInputError(f"need as many x as y runs (>= 1), got {len(xs)} and {len(ys)}")
    n = len(xs[0])
    if any(v.shape != (n,) for v in [*xs, *ys]):
        raise InvalidInputError("every run's x and y must be [n] arrays of one length n")
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level}")
    block = default_block(n) if block is None else int(block)
    a, b = np.stack(xs).astype(np.float64), np.stack(ys).astype(np.float64)
    whole = spearman_rows(a, b)
    rho = float(np.nanmean(whole)) if np.isfinite(whole).any() else math.nan
    if n == 0:
        return RankCheck(rho, math.nan, math.nan, len(xs), n, block, resamples)
    idx = circular_block_indices(n, block, resamples, rng)
    per_run = np.stack([spearman_rows(a[r][idx], b[r][idx]) for r in range(len(xs))])
    finite = np.isfinite(per_run)
    counts = finite.sum(axis=0)
    kept = counts > 0
    values = np.where(finite, per_run, 0.0).sum(axis=0)[kept] / counts[kept]
    if not len(values):
        return RankCheck(rho, math.nan, math.nan, len(xs), n, block, resamples)
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return RankCheck(rho, float(low), float(high), len(xs), n, block, resamples)


def error_rate(
    false_positives: np.ndarray, false_negatives: np.ndarray, ground_truth: np.ndarray
) -> np.ndarray:
    """Per frame ``(FP + FN) / (GT + FP)``, 0 where GT + FP = 0 (no person, no false
    alarm: nothing to get wrong). ``GT``: the frame's ground-truth persons that count
    (not ignore). Negative inputs (not counted) give NaN."""
    fp = np.asarray(false_positives, np.float64)
    fn = np.asarray(false_negatives, np.float64)
    gt = np.asarray(ground_truth, np.float64)
    denominator = gt + fp
    rate = np.divide(fp + fn, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return np.where((fp < 0) | (fn < 0) | (gt < 0), np.nan, rate)


#: The rank checks of the benchmark: name -> the per-frame error measure z is ranked by.
RANK_CHECKS = ("errors", "error_rate")


def rank_rng(cycle: int, method: str) -> np.random.Generator:
    """The block starts of a rank check: seeded by cycle and method, not by seed, so
    every seed of a cycle resamples the same stretches of the pool (and one seed's
    interval is the same alone or within the mean over seeds)."""
    return np.random.default_rng([cycle, zlib.crc32(method.encode())])


def pool_rank_checks(
    runs: Sequence[Mapping[str, Any]],
    rng_for: Callable[[], np.random.Generator],
    *,
    block: int | None = None,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> dict[str, RankCheck]:
    """The two rank checks of one cycle and method over one or more runs (seeds).

    ``runs``: per run the contents of a cycle's ``pool_frames.json``: ``pool_size`` P,
    and per unlabeled pool frame ``positions``, ``z``, ``false_positives``,
    ``false_negatives``, ``ground_truth``. Each run is laid on the pool's timeline
    (positions 0 .. P - 1, video order; NaN at the frames it does not have), and
    :func:`block_bootstrap_spearman` ranks z against "errors" = FP + FN and against
    "error_rate" = (FP + FN) / (GT + FP) (:func:`error_rate`). ``rng_for()`` gives a
    fresh generator per check (the same draws for both).
    """
    if not runs:
        raise InvalidInputError("a rank check needs at least one run")
    size = max(int(r["pool_size"]) for r in runs)
    z, errors, rates = [], [], []
    for r in runs:
        positions = np.asarray(r["positions"], np.int64)
        fp = np.asarray(r["false_positives"], np.float64)
        fn = np.asarray(r["false_negatives"], np.float64)
        gt = np.asarray(r["ground_truth"], np.float64)
        lines = [np.full(size, np.nan) for _ in range(3)]
        lines[0][positions] = np.asarray(r["z"], np.float64)
        lines[1][positions] = np.where((fp < 0) | (fn < 0), np.nan, fp + fn)
        lines[2][positions] = error_rate(fp, fn, gt)
        z.append(lines[0])
        errors.append(lines[1])
        rates.append(lines[2])
    return {
        name: block_bootstrap_spearman(
            z, measure, rng_for(), block=block, resamples=resamples, level=level
        )
        for name, measure in (("errors", errors), ("error_rate", rates))
    }
