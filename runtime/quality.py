"""A per-frame quality gate (QAN-inspired): blurred, dark, overexposed or covered frames
do not spend the labeling budget.

QAN (Liu et al., CVPR 2017) learns a quality score per image; here cheap statistics of
the decoded frame are enough to catch what wastes a labeler's time, and were chosen
by measuring them on PETS09 and on synthetic degradations of it (docs/scoring.md,
"Quality gate"). Every statistic is computed on the frame's luma (BT.601, OpenCV's
``RGB2GRAY``) resized with area interpolation to ``analysis_width`` pixels wide, which
normalises them for the frame's size:

- ``sharpness``: ``var(Laplacian(luma)) / (var(luma) + 1)``, the variance of the
  4-neighbour Laplacian relative to the luma's own variance: blur removes the high
  frequencies, while a change of gain or contrast scales both alike.
- ``mean_luma``: mean luma, 0-255.
- ``dark_fraction`` / ``clipped_fraction``: fractions of pixels with luma below
  ``dark_level`` / at or above ``clip_level``.
- ``covered_fraction``: fraction of the ``block x block`` tiles whose luma standard
  deviation is below ``flat_std`` (near-uniform: a lens cap, a hand, a wiper, mud).

A frame is gated when any statistic is past its limit in :class:`QualityConfig`;
gated frames are never flagged and their decision's reason is ``low_quality``. About
1 ms per 640x480 frame on one core (plain OpenCV and NumPy: no kernel of our own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from alscout.errors import ConfigError, InvalidInputError

__all__ = ["QualityConfig", "FrameQuality", "analysis_luma", "measure_quality"]


@dataclass(frozen=True)
class QualityConfig:
    """Limits of the quality gate; validated on construction (docs/scoring.md has the
    measurements behind the defaults).

    ``analysis_width``: pixels the luma is resized to before measuring. ``min_sharpness``:
    relative Laplacian variance below which a frame is blurred. ``min_mean_luma`` /
    ``max_mean_luma``: mean luma outside which a frame is dark / overexposed.
    ``dark_level``, ``max_dark_fraction``: a frame with more than that fraction of pixels
    below ``dark_level`` is dark. ``clip_level``, ``max_clipped_fraction``: likewise for
    pixels at or above ``clip_level``: overexposed. ``block``, ``flat_std``,
    ``max_covered_fraction``: a frame with more than that fraction of near-uniform tiles
    is covered.
    """

    analysis_width: int = 320
    min_sharpness: float = 0.05
    min_mean_luma: float = 25.0
    max_mean_luma: float = 230.0
    dark_level: int = 16
    max_dark_fraction: float = 0.75
    clip_level: int = 250
    max_clipped_fraction: float = 0.4
    block: int = 16
    flat_std: float = 2.0
    max_covered_fraction: float = 0.6

    def __post_init__(self) -> None:
        for name in ("analysis_width", "block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 4:
                raise ConfigError(f"quality {name} must be an integer >= 4, got {value!r}")
        for name in ("dark_level", "clip_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ConfigError(f"quality {name} must be an integer in [0, 255], got {value!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"quality {f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"quality {f.name} must be finite and >= 0, got {value!r}")
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))
        for name in ("max_dark_fraction", "max_clipped_fraction", "max_covered_fraction"):
            if getattr(self, name) > 1.0:
                raise ConfigError(
                    f"quality {name} is a fraction in [0, 1], got {getattr(self, name)}"
                )
        if self.min_mean_luma >= self.max_mean_luma:
            raise ConfigError(
                f"quality min_mean_luma ({self.min_mean_luma}) must be below max_mean_luma "
                f"({self.max_mean_luma})"
            )

    @classmethod
    def parse(cls, value: object) -> QualityConfig | None:
        """From a setting: None or False (gate off), True (defaults), a mapping of fields
        (a TOML ``[pipeline.quality]`` table), or a :class:`QualityConfig`."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(f"unknown quality settings {unknown}; known: {sorted(known)}")
            return cls(**dict(value))
        raise ConfigError(f"quality must be true, false or a table of limits, got {value!r}")

    def failures(self, quality: FrameQuality) -> tuple[str, ...]:
        """The checks ``quality`` fails, in the order blurred, dark, overexposed,
        covered; empty when the frame passes."""
        failed = []
        if quality.sharpness < self.min_sharpness:
            failed.append("blurred")
        if quality.mean_luma < self.min_mean_luma or quality.dark_fraction > self.max_dark_fraction:
            failed.append("dark")
        if (
            quality.mean_luma > self.max_mean_luma
            or quality.clipped_fraction > self.max_clipped_fraction
        ):
            failed.append("overexposed")
        if quality.covered_fraction > self.max_covered_fraction:
            failed.append("covered")
        return tuple(failed)


@dataclass(frozen=True)
class FrameQuality:
    """The statistics of one frame (module docstring); all floats, fractions in [0, 1]."""

    sharpness: float
    mean_luma: float
    dark_fraction: float
    clipped_fraction: float
    covered_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def analysis_luma(image: np.ndarray, width: int = 320) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> luma ``[h, width]`` uint8, area-resized (aspect kept).

    A frame narrower than ``width`` is measured at its own size (never enlarged).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidInputError("the quality gate takes RGB uint8 frames [H, W, 3]")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InvalidInputError(f"the quality gate takes RGB frames [H, W, 3], got {image.shape}")
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = luma.shape
    if w <= width:
        return luma
    height = max(1, round(h * width / w))
    return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)


def measure_quality(image: np.ndarray, config: QualityConfig | None = None) -> FrameQuality:
    """The quality statistics of one RGB uint8 frame ``[H, W, 3]`` (any size)."""
    config = config or QualityConfig()
    luma = analysis_luma(image, config.analysis_width)
    values = luma.astype(np.float32)
    laplacian = cv2.Laplacian(values, cv2.CV_32F, ksize=1)  # 4-neighbour, reflect-101 border
    variance = float(values.var(dtype=np.float64))
    sharpness = float(laplacian.var(dtype=np.float64)) / (variance + 1.0)
    n = luma.size
    dark = int(np.count_nonzero(luma < config.dark_level)) / n
    clipped = int(np.count_nonzero(luma >= config.clip_level)) / n
    return FrameQuality(
        sharpness=sharpness,
        mean_luma=float(values.mean(dtype=np.float64)),
        dark_fraction=dark,
        clipped_fraction=clipped,
        covered_fraction=_covered(values, config.block, config.flat_std),
    )


def _covered(values: np.ndarray, block: int, flat_std: float) -> float:
    """Fraction of whole ``block x block`` tiles (from the top-left) with std < flat_std;
    a frame smaller than one tile is one tile."""
    h, w = values.shape
    rows, cols = h // block, w // block
    if rows == 0 or cols == 0:
        return float(values.std(dtype=np.float64) < flat_std)
    tiles = values[: rows * block, : cols * block].reshape(rows, block, cols, block)
    std = tiles.astype(np.float64).std(axis=(1, 3))
    return float(np.count_nonzero(std < flat_std)) / std.size
