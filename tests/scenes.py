"""Synthetic street-ish RGB scenes for the fleet tests (perceptual hash, ingest)."""

from __future__ import annotations

import cv2
import numpy as np


def scene(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """An RGB street-ish scene [height, width, 3] uint8: smooth noise and coloured blocks."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (21, 21), 0)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 30))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(image, (x, y), (x + 20, y + 30), color, -1)
    return image
