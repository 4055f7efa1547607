"""Temporal smoothing of image-level scores (SPEC §2a, the paper's eq. 6)."""

from __future__ import annotations

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.temporal._checks import check_count, check_scores, check_sigma

__all__ = ["gaussian_weights", "smooth"]


def gaussian_weights(dt: int, sigma: float) -> np.ndarray:
    """Weights ``w(d) = exp(-d^2 / (2 sigma^2))`` for ``d = 0..dt``: ``[dt + 1]`` float64.

    ``dt`` and ``sigma`` are in frames. Only ``|d|`` is tabulated; the window is symmetric.
    """
    dt = check_count("dt", dt)
    sigma = check_sigma(sigma)
    d = np.arange(dt + 1, dtype=np.float64)
    return np.exp(-(d * d) / (2.0 * sigma * sigma))


def smooth(
    z: np.ndarray,
    dt: int = 5,
    sigma: float = 2.5,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussian-smoothed image-level scores: ``[T] -> [T]`` float64.

    ``zhat_t = sum_s w(s - t) z_s / sum_s w(s - t)`` over the frames ``s`` that exist
    with ``|s - t| <= dt`` (frames before the start, after the end or missing from the
    recording are left out and the weights renormalised over the rest).

    Args:
        z: image-level scores ``[T]``, finite.
        dt: half-width of the window in frames, >= 0 (0 returns ``z`` as float64).
        sigma: Gaussian width in frames, > 0.
        frames: the frame index of each score ``[T]``, strictly increasing integers,
            for recordings with gaps; default ``0..T-1``. Distances are in frame-index
            units, so a missing frame simply does not exist.

    Returns:
        ``zhat`` ``[T]`` float64, aligned with ``z``.

    Raises:
        InvalidInputError (a ``ValueError``): wrong rank, non-finite scores, dt < 0,
            sigma <= 0, frames of the wrong length or not strictly increasing.
    """
    values = check_scores(z)
    weights = gaussian_weights(dt, sigma)
    dt = len(weights) - 1
    n = values.shape[0]
    index = _frame_indices(frames, n)
    numerator = np.zeros(n, dtype=np.float64)
    denominator = np.zeros(n, dtype=np.float64)
    # Neighbour j positions away in the array is at most dt frames away only if |j| <= dt;
    # adding offsets in increasing order keeps the summation order of the streaming
    # selector, so both give bit-identical results.
    for j in range(-dt, dt + 1):
        if abs(j) >= n:
            continue
        lo, hi = max(0, -j), min(n, n - j)  # positions t whose neighbour t + j exists
        distance = np.abs(index[lo + j : hi + j] - index[lo:hi])
        inside = distance <= dt
        w = np.where(inside, weights[np.minimum(distance, dt)], 0.0)
        numerator[lo:hi] += w * values[lo + j : hi + j]
        denominator[lo:hi] += w
    if n == 0:
        return numerator
    return numerator / denominator


def _frame_indices(frames: np.ndarray | None, n: int) -> np.ndarray:
    """Frame indices ``[T]`` int64, checked to be strictly increasing."""
    if frames is None:
        return np.arange(n, dtype=np.int64)
    index = np.asarray(frames)
    if index.shape != (n,):
        raise InvalidInputError(
            f"frames must have one index per score: shape {index.shape}, expected ({n},)"
        )
    if n and not np.issubdtype(index.dtype, np.integer):
        raise InvalidInputError(f"frames must be integer frame indices, got dtype {index.dtype}")
    index = index.astype(np.int64, copy=False)
    steps = np.diff(index)
    if (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0])
        raise InvalidInputError(
            f"frames must strictly increase: frame {int(index[k + 1])} "
            f"follows frame {int(index[k])}"
        )
    return index
