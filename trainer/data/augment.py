"""Geometric augmentation that keeps boxes and pixels in step.

Every function takes an ``[H, W, C]`` image (any dtype) and a sequence of
:class:`Box` in that image's pixels, and returns the new image with the boxes moved
the same way. Photometric jitter (brightness, contrast, noise) changes no box.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from alscout.errors import InvalidInputError
from alscout.trainer.data.annotations import Box

__all__ = ["hflip", "rescale", "resize_to", "crop", "photometric_jitter"]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise InvalidInputError("image must be an [H, W] or [H, W, C] array")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"image has an empty side: shape {image.shape}")


def hflip(image: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Mirror left-right. A box ``x`` becomes ``W - x - w``; the image keeps its shape."""
    _check_image(image)
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    moved = tuple(
        Box(width - b.x - b.w, b.y, b.w, b.h, b.label, b.ignore, b.track_id) for b in boxes
    )
    return flipped, moved


def resize_to(
    image: np.ndarray, boxes: Sequence[Box], width: int, height: int
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Resize to exactly ``width x height`` pixels; boxes scale by the same factors.

    Shrinking uses area interpolation (no aliasing), enlarging bilinear.
    """
    _check_image(image)
    if width < 1 or height < 1:
        raise InvalidInputError(f"target size must be positive, got {width}x{height}")
    old_h, old_w = image.shape[:2]
    sx, sy = width / old_w, height / old_h
    if (width, height) == (old_w, old_h):
        return image, tuple(boxes)
    shrink = width * height < old_w * old_h
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, None]
    return resized, tuple(b.scaled(sx, sy) for b in boxes)


def rescale(
    image: np.ndarray, boxes: Sequence[Box], scale: float
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Resize by ``scale`` on both axes (size rounded to whole pixels, at least 1).

    Boxes scale by the exact factors the rounded size implies, so they stay on the
    same pixels.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise InvalidInputError(f"scale must be a positive number, got {scale}")
    _check_image(image)
    old_h, old_w = image.shape[:2]
    width = max(1, round(old_w * scale))
    height = max(1, round(old_h * scale))
    return resize_to(image, boxes, width, height)


def crop(
    image: np.ndarray,
    boxes: Sequence[Box],
    x: int,
    y: int,
    width: int,
    height: int,
    min_visible: float = 0.5,
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Cut the ``width x height`` window at ``(x, y)``; boxes are clipped to it.

    Boxes wholly outside are dropped; a box keeping less than ``min_visible`` of its
    area inside is kept, clipped, but marked ``ignore`` (a half-visible pedestrian is
    neither a clean positive nor a negative).
    """
    _check_image(image)
    img_h, img_w = image.shape[:2]
    if width < 1 or height < 1 or x < 0 or y < 0 or x + width > img_w or y + height > img_h:
        raise InvalidInputError(
            f"crop {width}x{height} at ({x}, {y}) does not fit in a {img_w}x{img_h} image"
        )
    out = []
    for b in boxes:
        x1, y1 = max(b.x, x), max(b.y, y)
        x2, y2 = min(b.x2, x + width), min(b.y2, y + height)
        if x2 <= x1 or y2 <= y1:
            continue
        visible = (x2 - x1) * (y2 - y1) / max(b.w * b.h, 1e-12)
        ignore = b.ignore or visible < min_visible
        out.append(Box(x1 - x, y1 - y, x2 - x1, y2 - y1, b.label, ignore, b.track_id))
    return np.ascontiguousarray(image[y : y + height, x : x + width]), tuple(out)


def photometric_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    noise_std: float = 0.0,
) -> np.ndarray:
    """Random brightness/contrast (multiplicative, +-fraction) and Gaussian noise.

    ``image``: ``[H, W, C]`` uint8. ``noise_std`` is in grey levels (0-255).
    Returns a new uint8 image of the same shape.
    """
    _check_image(image)
    if image.dtype != np.uint8:
        raise InvalidInputError(f"photometric_jitter needs a uint8 image, got {image.dtype}")
    if min(brightness, contrast, noise_std) < 0:
        raise InvalidInputError("brightness, contrast and noise_std must be >= 0")
    pixels = image.astype(np.float32)
    gain = 1.0 + rng.uniform(-brightness, brightness)
    spread = 1.0 + rng.uniform(-contrast, contrast)
    mean = pixels.mean()
    pixels = (pixels - mean) * spread + mean * gain
    if noise_std > 0:
        pixels += rng.normal(0.0, noise_std, size=pixels.shape).astype(np.float32)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
