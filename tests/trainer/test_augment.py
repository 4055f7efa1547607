"""Geometric augmentation moves boxes with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.trainer.data.annotations import Box
from alscout.trainer.data.augment import crop, hflip, photometric_jitter, rescale, resize_to


def _marked(h: int = 40, w: int = 60) -> tuple[np.ndarray, Box]:
    image = np.zeros((h, w, 3), np.uint8)
    image[10:30, 5:15] = 255  # the object
    return image, Box(5, 10, 10, 20, track_id=3)


def test_hflip_moves_box_with_pixels() -> None:
    image, box = _marked()
    flipped, (moved,) = hflip(image, [box])
    assert moved == Box(45, 10, 10, 20, track_id=3)
    assert flipped[10:30, 45:55].min() == 255
    assert flipped.sum() == image.sum()
    again, (back,) = hflip(flipped, [moved])
    assert np.array_equal(again, image) and back == box


@pytest.mark.parametrize("scale", [0.5, 2.0, 1.5])
def test_rescale_scales_boxes(scale: float) -> None:
    image, box = _marked()
    out, (moved,) = rescale(image, [box], scale)
    assert out.shape == (round(40 * scale), round(60 * scale), 3)
    assert moved.x == pytest.approx(5 * scale) and moved.h == pytest.approx(20 * scale)
    # the box interior is still the bright object
    x, y, w, h = (round(v) for v in (moved.x, moved.y, moved.w, moved.h))
    assert out[y + 1 : y + h - 1, x + 1 : x + w - 1].min() > 200


def test_resize_to_uses_separate_axes() -> None:
    image, box = _marked()
    out, (moved,) = resize_to(image, [box], 120, 20)
    assert out.shape == (20, 120, 3)
    assert (moved.x, moved.y, moved.w, moved.h) == pytest.approx((10, 5, 20, 10))
    single = np.zeros((40, 60, 1), np.uint8)
    assert resize_to(single, [], 30, 20)[0].shape == (20, 30, 1)


def test_bad_arguments() -> None:
    image, box = _marked()
    with pytest.raises(InvalidInputError):
        rescale(image, [box], 0)
    with pytest.raises(InvalidInputError):
        resize_to(image, [box], 0, 10)
    with pytest.raises(InvalidInputError):
        hflip(np.zeros(5), [])


def test_crop_clips_and_marks_partly_visible() -> None:
    image, box = _marked()
    out, boxes = crop(image, [box, Box(50, 0, 5, 5)], 0, 22, 30, 18)
    assert out.shape == (18, 30, 3)
    (clipped,) = boxes  # the second box lies outside and is dropped
    assert (clipped.x, clipped.y, clipped.w, clipped.h) == (5, 0, 10, 8)
    assert clipped.ignore  # 40 % of it is visible: not a clean positive
    _, (whole,) = crop(image, [box], 0, 5, 30, 30)
    assert not whole.ignore
    with pytest.raises(InvalidInputError):
        crop(image, [], 50, 0, 20, 10)


def test_photometric_jitter_is_seeded() -> None:
    image, _ = _marked()
    a = photometric_jitter(image, np.random.default_rng(1), noise_std=5)
    b = photometric_jitter(image, np.random.default_rng(1), noise_std=5)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and not np.array_equal(a, image)
