"""Geometric augmentation that keeps boxes and pixels in step.

Every function takes an ``[H, W, C]`` image (any dtype) and a sequence of
:class:`Box` in that image's pixels, and returns the new image with the boxes moved
the same way. Photometric jitter (brightness, contrast, noise) changes no box.

:func:`zoom` is the one scale change that training (:func:`zoom_holding`, :func:`random_zoom`)
and ``alscout evaluate --zoom`` share: the frame keeps its size, people grow or shrink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from alscout.errors import InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset

__all__ = [
    "MIN_VISIBLE",
    "hflip",
    "rescale",
    "resize_to",
    "crop",
    "zoom",
    "zoom_boxes",
    "zoom_dataset",
    "random_zoom",
    "zoom_holding",
    "photometric_jitter",
    "reduce_detail",
]

#: A box cut by a crop keeps being a positive when at least this much of its area stays in.
MIN_VISIBLE = 0.5


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
    min_visible: float = MIN_VISIBLE,
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


def _zoom_windows(
    width: int, height: int, factor: float, anchor: tuple[float, float]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """``(source, target)`` windows ``(x, y, w, h)`` of a zoom, whole pixels.

    Zoom in (``factor > 1``): the source is a ``W/factor x H/factor`` crop, the target
    the whole frame. Zoom out: the source is the whole frame, the target a
    ``W*factor x H*factor`` window of the canvas. ``anchor`` in [0, 1]^2 places the
    smaller window inside the frame ((0.5, 0.5): centred).
    """
    if factor >= 1:
        w, h = max(1, round(width / factor)), max(1, round(height / factor))
    else:
        w, h = max(1, round(width * factor)), max(1, round(height * factor))
    x, y = round(anchor[0] * (width - w)), round(anchor[1] * (height - h))
    inner, whole = (x, y, w, h), (0, 0, width, height)
    return (inner, whole) if factor >= 1 else (whole, inner)


def _check_zoom(factor: float, anchor: tuple[float, float]) -> None:
    if not (np.isfinite(factor) and factor > 0):
        raise InvalidInputError(f"zoom factor must be a positive number, got {factor}")
    if len(anchor) != 2 or not all(0.0 <= a <= 1.0 for a in anchor):
        raise InvalidInputError(f"anchor must be two fractions in [0, 1], got {anchor}")


def zoom_boxes(
    boxes: Sequence[Box],
    width: int,
    height: int,
    factor: float,
    anchor: tuple[float, float] = (0.5, 0.5),
    min_visible: float = MIN_VISIBLE,
) -> tuple[Box, ...]:
    """Where :func:`zoom` moves ``boxes`` of a ``width x height`` image (no pixels needed)."""
    _check_zoom(factor, anchor)
    (sx, sy, sw, sh), (tx, ty, tw, th) = _zoom_windows(width, height, factor, anchor)
    if (sw, sh, tw, th) == (width, height, width, height):
        return tuple(boxes)
    out = []
    for b in boxes:  # crop's rule, then the resize and the placement on the canvas
        x1, y1 = max(b.x, sx), max(b.y, sy)
        x2, y2 = min(b.x2, sx + sw), min(b.y2, sy + sh)
        if x2 <= x1 or y2 <= y1:
            continue
        visible = (x2 - x1) * (y2 - y1) / max(b.w * b.h, 1e-12)
        clipped = Box(x1 - sx, y1 - sy, x2 - x1, y2 - y1, b.label, b.ignore, b.track_id)
        scaled = clipped.scaled(tw / sw, th / sh)
        ignore = b.ignore or visible < min_visible
        out.append(replace(scaled, x=scaled.x + tx, y=scaled.y + ty, ignore=ignore))
    return tuple(out)


def zoom_dataset(dataset: Dataset, factor: float) -> Dataset:
    """Every record's boxes where :func:`zoom` about the frame's centre moves them
    (:func:`zoom_boxes`); the dataset is named ``NAME@zoomF``. Images are not touched:
    the caller zooms each one as it loads it."""
    return Dataset(
        [replace(r, boxes=zoom_boxes(r.boxes, r.width, r.height, factor)) for r in dataset],
        name=f"{dataset.name}@zoom{factor:g}",
        labels=dataset.labels,
    )


def zoom(
    image: np.ndarray,
    boxes: Sequence[Box],
    factor: float,
    anchor: tuple[float, float] = (0.5, 0.5),
    fill: Sequence[float] | None = None,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Enlarge (``factor > 1``) or shrink (``factor < 1``) the content; the frame keeps its size.

    Zoom in crops a ``W/factor x H/factor`` window at ``anchor`` (fractions of the
    free room, (0.5, 0.5) = the centre) and resizes it up to ``W x H``. Zoom out
    resizes the image to ``W*factor x H*factor`` and places it at ``anchor`` on a
    canvas filled with ``fill`` (per channel; default the image's mean colour).
    Window sides are whole pixels, so the scale is ``factor`` up to rounding; boxes
    move by the exact factors used and stay on the same pixels (:func:`zoom_boxes`).

    Boxes cut by the crop follow :func:`crop`'s rule: wholly outside are dropped,
    less than ``min_visible`` of the area left in is kept clipped as ``ignore``, the
    rest are kept clipped. Ignore boxes stay ignore. ``image``: ``[H, W]`` or
    ``[H, W, C]``, any dtype; the result has the same shape and dtype.
    """
    _check_image(image)
    _check_zoom(factor, anchor)
    height, width = image.shape[:2]
    moved = zoom_boxes(boxes, width, height, factor, anchor, min_visible)
    (sx, sy, sw, sh), (tx, ty, tw, th) = _zoom_windows(width, height, factor, anchor)
    if (sw, sh, tw, th) == (width, height, width, height):
        return image, moved
    window, _ = resize_to(crop(image, (), sx, sy, sw, sh)[0], (), tw, th)
    if (tw, th) == (width, height):
        return window, moved
    if fill is None:
        fill = image.reshape(height, width, -1).mean(axis=(0, 1))
    values = np.asarray(fill, dtype=np.float64)
    if np.issubdtype(image.dtype, np.integer):
        values = np.rint(values)
    canvas = np.empty_like(image)
    canvas[...] = values
    canvas[ty : ty + th, tx : tx + tw] = window
    return canvas, moved


def _holding(start: float, size: float, window: int, frame: int, u: float) -> float:
    """Anchor (fraction of the free room) of a ``window`` that holds ``[start, start+size)``.

    Uniform (by ``u``) among the placements that hold it; centred on it when it does
    not fit.
    """
    room = frame - window
    if room <= 0:
        return 0.5
    low, high = max(0.0, start + size - window), min(start, float(room))
    offset = low + u * (high - low) if low <= high else start + size / 2 - window / 2
    return float(np.clip(offset / room, 0.0, 1.0))


def random_zoom(
    image: np.ndarray,
    boxes: Sequence[Box],
    rng: np.random.Generator,
    zoom_range: tuple[float, float] = (0.5, 3.0),
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, tuple[Box, ...], float]:
    """:func:`zoom` by a factor drawn log-uniformly from ``zoom_range``.

    Zooming in, the window holds one of the image's non-ignore boxes, drawn
    uniformly (placed uniformly among the windows that hold it; centred on it when
    it is larger than the window): a crop of empty street would teach the larger
    heads nothing. Zooming out, or without such a box, the anchor is uniform.
    Returns the image, the boxes and the factor. Draws from ``rng``: the factor,
    two uniforms for the anchor, then the box's index when one is held.
    """
    low, high = zoom_range
    if not (0 < low <= high and np.isfinite(high)):
        raise InvalidInputError(f"zoom_range must be 0 < low <= high, got {zoom_range}")
    _check_image(image)
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    anchor = (float(rng.uniform()), float(rng.uniform()))
    people = [b for b in boxes if not b.ignore]
    held = people[int(rng.integers(len(people)))] if factor > 1 and people else None
    zoomed, moved = zoom_holding(image, boxes, factor, held, anchor, min_visible)
    return zoomed, moved, factor


def zoom_holding(
    image: np.ndarray,
    boxes: Sequence[Box],
    factor: float,
    held: Box | None,
    uniforms: tuple[float, float],
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """:func:`zoom` whose zoom-in window holds the box ``held``.

    The window is placed by ``uniforms`` (two draws in [0, 1)) among the placements
    that hold ``held``, centred on it when it is larger than the window. Zooming
    out, or with ``held`` None, ``uniforms`` is the anchor itself.
    """
    anchor = uniforms
    if factor > 1 and held is not None:
        _check_image(image)
        height, width = image.shape[:2]
        (_, _, w, h), _ = _zoom_windows(width, height, factor, uniforms)
        anchor = (
            _holding(held.x, held.w, w, width, uniforms[0]),
            _holding(held.y, held.h, h, height, uniforms[1]),
        )
    return zoom(image, boxes, factor, anchor, min_visible=min_visible)


def reduce_detail(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` and enlarge back: same size, no detail finer than ``factor`` px.

    What a zoom-in does to the pixels, without moving anything: an enlarged person
    is an upsampled small one. ``image``: ``[H, W]`` or ``[H, W, C]``, any dtype;
    the result has the same shape and dtype (boxes stay where they are).
    ``factor`` >= 1; 1 returns ``image`` itself.
    """
    _check_image(image)
    if not 1.0 <= factor < 100:
        raise InvalidInputError(f"reduce_detail factor must be in [1, 100), got {factor}")
    if factor == 1.0:
        return image
    height, width = image.shape[:2]
    small_w, small_h = max(1, round(width / factor)), max(1, round(height / factor))
    small, _ = resize_to(image, (), small_w, small_h)
    back, _ = resize_to(small, (), width, height)
    return back


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
