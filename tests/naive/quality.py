"""Plain-loop references of the quality statistics (alscout.runtime.quality).

They start from the same analysis luma (OpenCV's colour conversion and area resize)
and then do the arithmetic by hand: the Laplacian as a sum of shifted copies with a
reflect-101 border, the tiles' standard deviations by a loop, float64 throughout.
"""

from __future__ import annotations

import numpy as np


def naive_laplacian(luma: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian, border reflected without repeating the edge pixel."""
    x = np.pad(np.asarray(luma, np.float64), 1, mode="reflect")
    return x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4.0 * x[1:-1, 1:-1]


def naive_quality(
    luma: np.ndarray,
    dark_level: int = 16,
    clip_level: int = 250,
    block: int = 16,
    flat_std: float = 2.0,
) -> dict[str, float]:
    """The five statistics of an analysis luma ``[h, w]`` uint8."""
    x = np.asarray(luma, np.float64)
    h, w = x.shape
    tiles = []
    for i in range(0, h - block + 1, block):
        for j in range(0, w - block + 1, block):
            tiles.append(x[i : i + block, j : j + block].std() < flat_std)
    if not tiles:
        tiles = [x.std() < flat_std]
    return {
        "sharpness": naive_laplacian(x).var() / (x.var() + 1.0),
        "mean_luma": x.mean(),
        "dark_fraction": float((x < dark_level).sum()) / x.size,
        "clipped_fraction": float((x >= clip_level).sum()) / x.size,
        "covered_fraction": sum(tiles) / len(tiles),
    }
