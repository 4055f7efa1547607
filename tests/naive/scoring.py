"""Plain float64 NumPy versions of SPEC.md §1, written for clarity, not speed."""

from __future__ import annotations

import numpy as np


def naive_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in nats with 0 ln 0 = 0, float64."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, -p * np.log(p), 0.0)
        b = np.where(p < 1, -(1 - p) * np.log1p(-p), 0.0)
    return a + b


def naive_window_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the frame, by a loop over pixels."""
    h, w = x.shape
    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            window = x[max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1]
            out[i, j] = window.mean()
    return out


def naive_window_mean_fast(x: np.ndarray, radius: int) -> np.ndarray:
    """The same mean via a summed-area table (for larger test frames)."""
    h, w = x.shape
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = np.cumsum(np.cumsum(np.asarray(x, np.float64), 0), 1)
    top = np.clip(np.arange(h) - radius, 0, h)
    bottom = np.clip(np.arange(h) + radius + 1, 0, h)
    left = np.clip(np.arange(w) - radius, 0, w)
    right = np.clip(np.arange(w) + radius + 1, 0, w)
    sums = (
        table[bottom][:, right]
        - table[top][:, right]
        - table[bottom][:, left]
        + table[top][:, left]
    )
    counts = np.outer(bottom - top, right - left)
    return sums / counts


def naive_pixel_scores(
    probs: np.ndarray, radius: int = 9, method: str = "divergence"
) -> np.ndarray:
    """[K,H,W] -> [H,W] float64."""
    probs = np.asarray(probs, np.float64)
    if method == "entropy":
        return naive_entropy(probs).sum(axis=0)
    mean = naive_window_mean_fast if probs.shape[1] * probs.shape[2] > 400 else naive_window_mean
    total = np.zeros(probs.shape[1:])
    for head in probs:
        total += naive_entropy(mean(head, radius)) - mean(naive_entropy(head), radius)
    return total


def naive_aggregate(score_map: np.ndarray, region: int = 30, how: str = "maxpool") -> float:
    """[H,W] -> float: mean of region maxima over tiles from the top-left corner."""
    score_map = np.asarray(score_map, np.float64)
    if how == "mean":
        return float(score_map.mean())
    h, w = score_map.shape
    maxima = [
        score_map[i : i + region, j : j + region].max()
        for i in range(0, h, region)
        for j in range(0, w, region)
    ]
    return float(np.mean(maxima))


def naive_mc_dropout(samples: np.ndarray) -> np.ndarray:
    """[T,K,H,W] -> [H,W]: sum_k H(mean_t p) - mean_t H(p)."""
    samples = np.asarray(samples, np.float64)
    return (naive_entropy(samples.mean(0)) - naive_entropy(samples).mean(0)).sum(0)
