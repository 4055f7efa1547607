"""Choosing frames once per active-learning cycle (SPEC §2a, the paper's Step 4).

Every selector returns frame indices (positions in ``z``) in pick order. Random
selectors draw from a seeded ``np.random.Generator`` argument, never the global RNG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from alscout.runtime.temporal._checks import (
    check_count,
    check_frame_set,
    check_rng,
    check_scores,
)
from alscout.runtime.temporal.smoothing import smooth

__all__ = ["select_top", "select_video", "select_random", "select_guided_random"]

log = logging.getLogger(__name__)


def select_top(z: np.ndarray, budget: int, labeled: Iterable[int] = ()) -> list[int]:
    """Still images: the ``budget`` highest scores, skipping ``labeled``.

    Args:
        z: image-level scores ``[N]``, finite.
        budget: how many to pick, >= 0 (fewer come back when fewer are unlabeled).
        labeled: indices already labeled, each in ``[0, N)``.

    Returns:
        Picked indices, highest score first; ties go to the lower index first.
    """
    scores = check_scores(z)
    budget = check_count("budget", budget)
    taken = check_frame_set("labeled", labeled, scores.shape[0])
    order = _ranking(scores)
    if taken.size:
        order = order[~np.isin(order, taken)]
    return [int(i) for i in order[:budget]]


def select_video(
    z: np.ndarray,
    budget: int,
    dt: int = 5,
    sigma: float = 2.5,
    dt1: int = 15,
    dt2: int = 2,
    earlier: Iterable[int] = (),
    labeled: Iterable[int] = (),
) -> list[int]:
    """Video: smooth the scores (eq. 6), then pick greedily under the temporal rules.

    Greedy, highest smoothed score first (ties: lower frame index first), skipping a
    frame that is labeled, within ``dt1`` frames of a frame picked in this call, or
    within ``dt2`` frames of a frame in ``earlier``; stops at ``budget`` frames.

    Args:
        z: raw image-level scores ``[T]`` of one recording, frame ``t`` at position ``t``.
        budget: how many frames to pick, >= 0.
        dt, sigma: smoothing half-width and Gaussian width, in frames (see :func:`smooth`).
        dt1: exclusion half-width around frames picked in this cycle, frames, >= 0.
        dt2: exclusion half-width around frames picked in earlier cycles, frames, >= 0.
        earlier: frames picked from this recording in earlier cycles, each in ``[0, T)``.
        labeled: frames already labeled (only the frame itself is skipped).

    Returns:
        Picked frame indices in pick order (decreasing smoothed score).
    """
    scores = check_scores(z)
    budget = check_count("budget", budget)
    dt1 = check_count("dt1", dt1)
    dt2 = check_count("dt2", dt2)
    n = scores.shape[0]
    earlier_frames = check_frame_set("earlier", earlier, n)
    labeled_frames = check_frame_set("labeled", labeled, n)
    smoothed = smooth(scores, dt=dt, sigma=sigma)
    return _greedy(_ranking(smoothed), n, budget, dt1, dt2, earlier_frames, labeled_frames)


def select_random(
    n_frames: int, budget: int, rng: np.random.Generator, labeled: Iterable[int] = ()
) -> list[int]:
    """Uniformly random frames without replacement, skipping ``labeled``.

    Args:
        n_frames: number of frames (or images) to choose from, >= 0.
        budget: how many to pick, >= 0.
        rng: the seeded generator every random choice comes from.
        labeled: indices already labeled, each in ``[0, n_frames)``.

    Returns:
        Picked indices in draw order.
    """
    n = check_count("n_frames", n_frames)
    budget = check_count("budget", budget)
    rng = check_rng(rng)
    taken = check_frame_set("labeled", labeled, n)
    free = np.setdiff1d(np.arange(n, dtype=np.int64), taken, assume_unique=True)
    picks = rng.permutation(free)[:budget]
    return [int(i) for i in picks]


def select_guided_random(
    z_or_n: np.ndarray | int,
    budget: int,
    rng: np.random.Generator,
    dt1: int = 15,
    dt2: int = 2,
    earlier: Iterable[int] = (),
    labeled: Iterable[int] = (),
) -> list[int]:
    """Random order through the same exclusion rules as :func:`select_video`.

    Args:
        z_or_n: the number of frames, or the scores ``[T]`` (only their length is used).
        budget, dt1, dt2, earlier, labeled: as in :func:`select_video`.
        rng: the seeded generator every random choice comes from.

    Returns:
        Picked frame indices in pick order.
    """
    if isinstance(z_or_n, int | np.integer) and not isinstance(z_or_n, bool):
        n = check_count("n_frames", z_or_n)
    else:
        n = check_scores(z_or_n).shape[0]
    budget = check_count("budget", budget)
    dt1 = check_count("dt1", dt1)
    dt2 = check_count("dt2", dt2)
    rng = check_rng(rng)
    earlier_frames = check_frame_set("earlier", earlier, n)
    labeled_frames = check_frame_set("labeled", labeled, n)
    order = rng.permutation(n)
    return _greedy(order, n, budget, dt1, dt2, earlier_frames, labeled_frames)


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; a stable sort keeps lower indices first on ties."""
    return np.argsort(-scores, kind="stable")


def _greedy(
    order: np.ndarray,
    n: int,
    budget: int,
    dt1: int,
    dt2: int,
    earlier: np.ndarray,
    labeled: np.ndarray,
) -> list[int]:
    """Walk ``order`` and keep frames the exclusion rules allow, up to ``budget``.

    ``blocked[t]`` is set for labeled frames, frames within ``dt2`` of an earlier pick
    and frames within ``dt1`` of a pick made here, so each test is O(1).
    """
    blocked = np.zeros(n, dtype=bool)
    blocked[labeled] = True
    for frame in earlier:
        blocked[max(0, frame - dt2) : frame + dt2 + 1] = True
    picks: list[int] = []
    if budget == 0:
        return picks
    for frame in order.tolist():
        if blocked[frame]:
            continue
        picks.append(frame)
        if len(picks) == budget:
            break
        blocked[max(0, frame - dt1) : frame + dt1 + 1] = True
    if len(picks) < budget:
        log.debug(
            "temporal rules left fewer frames than the budget picks=%d budget=%d",
            len(picks),
            budget,
        )
    return picks
