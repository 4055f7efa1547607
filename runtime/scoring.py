"""Pixel and image scores of Aghdam et al. (ICCV 2019), SPEC.md §1.

Scoring is separated from reduction: :func:`pixel_scores` (and
:func:`mc_dropout_scores`) turn head probabilities into a score map S,
:func:`aggregate` reduces S to the image score z, and ranking lives in
:mod:`alscout.runtime.temporal`.

Shapes: ``probs`` is ``[K, H, W]`` for one frame or ``[N, K, H, W]`` for a batch,
float32 sigmoid outputs of the K heads at the frame's resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import get_num_threads

from alscout.errors import InvalidInputError
from alscout.runtime import _kernels

__all__ = [
    "AGGREGATIONS",
    "METHODS",
    "aggregate",
    "checked_probabilities",
    "image_scores",
    "mc_dropout_scores",
    "merge_mirrored",
    "pixel_scores",
]

_MIN_BAND_ROWS = 16


def _band_rows(n_frames: int, height: int) -> int:
    """Rows per parallel task: enough tasks to keep every thread busy on small batches."""
    bands = max(1, -(-get_num_threads() // n_frames))
    return max(_MIN_BAND_ROWS, -(-height // bands))


def _as_float_array(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"{name} must hold floating-point values, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    return np.ascontiguousarray(array)


def _check_probabilities(array: np.ndarray, name: str) -> None:
    """Raise when ``array`` holds NaN or values outside [0, 1]."""
    if array.size == 0:
        raise InvalidInputError(f"{name} is empty (shape {array.shape})")
    nan, below, above = _kernels.count_outside_unit_interval(array.reshape(-1))
    if nan:
        raise InvalidInputError(f"{name} holds {nan} NaN value(s); probabilities must be finite")
    if below or above:
        raise InvalidInputError(
            f"{name} holds {below + above} value(s) outside [0, 1] "
            f"(min {float(array.min()):.6g}, max {float(array.max()):.6g}); "
            "pass sigmoid probabilities, not logits"
        )


def _as_batch(probs: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """``[K,H,W]`` or ``[N,K,H,W]`` -> ``([N,K,H,W], was_single)``; values not checked."""
    array = _as_float_array(probs, name)
    if array.ndim == 3:
        array, single = array[np.newaxis], True
    elif array.ndim == 4:
        single = False
    else:
        raise InvalidInputError(
            f"{name} must have rank 3 [K,H,W] or 4 [N,K,H,W], got rank {array.ndim} "
            f"(shape {array.shape})"
        )
    if array.size == 0:
        raise InvalidInputError(f"{name} is empty (shape {array.shape})")
    return array, single


def checked_probabilities(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    """``[K,H,W]`` or ``[N,K,H,W]`` -> ``[N,K,H,W]`` float, C-contiguous, checked in [0, 1].

    The checks every score applies (rank, NaN, range), for scores computed outside the
    kernels (the detection-based acquisition functions).
    """
    batch, _ = _as_batch(probs, name)
    _check_probabilities(batch, name)
    return batch


def _divergence(batch: np.ndarray, radius: int) -> np.ndarray:
    """The kernel checks the values as it reads them; a full check names the problem."""
    out = np.empty((batch.shape[0], batch.shape[2], batch.shape[3]), np.float32)
    band = _band_rows(batch.shape[0], batch.shape[2])
    bad = np.zeros(batch.shape[0] * -(-batch.shape[2] // band), np.int64)
    # A radius past the frame's size gives the same (whole-frame) windows; clipping it
    # bounds the kernel's scratch, which grows with the radius.
    radius = min(radius, max(batch.shape[2], batch.shape[3]))
    _kernels.divergence_kernel(batch, radius, band, out, bad)
    if bad.any():
        _check_probabilities(batch, "probs")
        raise InvalidInputError(f"probs holds {int(bad.sum())} value(s) outside [0, 1]")
    return out


def _entropy(batch: np.ndarray, radius: int) -> np.ndarray:
    _check_probabilities(batch, "probs")
    out = np.empty((batch.shape[0], batch.shape[2], batch.shape[3]), np.float32)
    _kernels.entropy_kernel(batch, _band_rows(batch.shape[0], batch.shape[2]), out)
    return out


#: Pixel-score methods: name -> kernel driver taking ([N,K,H,W], radius) -> [N,H,W].
METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "divergence": _divergence,
    "entropy": _entropy,
}


def pixel_scores(probs: np.ndarray, radius: int = 9, method: str = "divergence") -> np.ndarray:
    """Score map S of one frame or a batch (SPEC §1, eq. 1-4).

    Args:
        probs: ``[K, H, W]`` or ``[N, K, H, W]`` probabilities in [0, 1].
        radius: half-width r of the (2r+1) x (2r+1) window, clipped to the frame;
            window means divide by the number of in-frame pixels. Unused by "entropy".
        method: ``"divergence"``, ``sum_k H(mean_win p_k) - mean_win H(p_k)``, or
            ``"entropy"``, ``sum_k H(p_k)``; H is the binary entropy in nats.

    Returns:
        ``[H, W]`` (or ``[N, H, W]``) float32 scores.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown scoring method {method!r}; choose from {sorted(METHODS)}")
    radius = _check_int(radius, "radius", minimum=0)
    batch, single = _as_batch(probs, "probs")
    scores = METHODS[method](batch, radius)
    return scores[0] if single else scores


def mc_dropout_scores(samples: np.ndarray) -> np.ndarray:
    """MC-dropout baseline: ``sum_k H(mean_t p_kt) - mean_t H(p_kt)`` per pixel (SPEC §1).

    Args:
        samples: ``[T, K, H, W]`` or ``[N, T, K, H, W]``, T stochastic passes with
            dropout active.

    Returns:
        ``[H, W]`` (or ``[N, H, W]``) float32 scores.
    """
    array = _as_float_array(samples, "samples")
    if array.ndim not in (4, 5):
        raise InvalidInputError(
            f"samples must have rank 4 [T,K,H,W] or 5 [N,T,K,H,W], got rank {array.ndim} "
            f"(shape {array.shape})"
        )
    single = array.ndim == 4
    batch = array[np.newaxis] if single else array
    _check_probabilities(batch, "samples")
    out = np.empty((batch.shape[0], batch.shape[3], batch.shape[4]), np.float32)
    _kernels.mc_dropout_kernel(batch, _band_rows(batch.shape[0], batch.shape[3]), out)
    return out[0] if single else out


def merge_mirrored(probs: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """Double evaluation (SPEC §1): flip the mirror's maps back along W and average.

    Args:
        probs: ``[..., H, W]`` maps of the frames.
        mirrored: maps of the horizontally mirrored frames, same shape.

    Returns:
        float32 maps of the same shape.
    """
    original = _as_float_array(probs, "probs")
    flipped = _as_float_array(mirrored, "mirrored")
    if original.shape != flipped.shape:
        raise InvalidInputError(
            f"probs {original.shape} and mirrored {flipped.shape} must have the same shape"
        )
    merged = np.add(original, flipped[..., ::-1], dtype=np.float32)
    merged *= np.float32(0.5)
    return merged


def _region_max_mean(maps: np.ndarray, region: int) -> np.ndarray:
    out = np.empty(maps.shape[0], np.float64)
    _kernels.region_max_mean_kernel(maps, region, out)
    return out


def _mean(maps: np.ndarray, region: int) -> np.ndarray:
    out = np.empty(maps.shape[0], np.float64)
    _kernels.mean_kernel(maps, out)
    return out


#: Aggregations: name -> driver taking ([N,H,W], region) -> [N] float64.
AGGREGATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "maxpool": _region_max_mean,
    "mean": _mean,
}


def aggregate(score_maps: np.ndarray, region: int = 30, how: str = "maxpool") -> float | np.ndarray:
    """Image score z from a score map (SPEC §1, eq. 5).

    Args:
        score_maps: ``[H, W]`` or ``[N, H, W]``.
        region: side R of the square regions tiled from the top-left corner; regions
            on the right and bottom edges may be smaller and still count.
        how: ``"maxpool"``, the mean over regions of the region maximum, or ``"mean"``,
            the mean of all pixels.

    Returns:
        A float for one map, ``[N]`` float64 for a batch.
    """
    if how not in AGGREGATIONS:
        raise InvalidInputError(f"unknown aggregation {how!r}; choose from {sorted(AGGREGATIONS)}")
    region = _check_int(region, "region", minimum=1)
    maps = _as_float_array(score_maps, "score_maps")
    if maps.ndim not in (2, 3):
        raise InvalidInputError(
            f"score_maps must have rank 2 [H,W] or 3 [N,H,W], got rank {maps.ndim} "
            f"(shape {maps.shape})"
        )
    single = maps.ndim == 2
    batch = maps[np.newaxis] if single else maps
    if batch.size == 0:
        raise InvalidInputError(f"score_maps is empty (shape {maps.shape})")
    if not np.isfinite(batch).all():
        raise InvalidInputError("score_maps holds NaN or infinite values")
    z = AGGREGATIONS[how](batch, region)
    return float(z[0]) if single else z


def image_scores(
    probs: np.ndarray,
    radius: int = 9,
    region: int = 30,
    method: str = "divergence",
    how: str = "maxpool",
) -> np.ndarray:
    """``aggregate(pixel_scores(probs))`` for a batch ``[N, K, H, W]`` -> ``[N]`` float64."""
    batch = np.asarray(probs)
    if batch.ndim == 3:
        batch = batch[np.newaxis]
    return np.asarray(aggregate(pixel_scores(batch, radius, method), region, how))


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
