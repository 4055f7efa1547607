"""Geometric augmentation moves boxes with the pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.augment import (
    crop,
    hflip,
    photometric_jitter,
    random_zoom,
    reduce_detail,
    rescale,
    resize_to,
    zoom,
    zoom_boxes,
    zoom_dataset,
)


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


def test_reduce_detail_removes_fine_detail_and_keeps_size_and_mean() -> None:
    checker = (np.indices((60, 80)).sum(axis=0) % 2 * 200).astype(np.uint8)  # 1-px detail
    image = np.dstack([checker] * 3)
    assert reduce_detail(image, 1.0) is image
    soft = reduce_detail(image, 2.0)
    assert soft.shape == image.shape and soft.dtype == np.uint8
    assert soft.std() < 0.05 * image.std()  # the checkerboard averages out
    assert abs(float(soft.mean()) - float(image.mean())) < 2
    smooth = np.dstack([np.tile(np.linspace(0, 250, 80), (60, 1)).astype(np.float32)] * 3)
    kept = reduce_detail(smooth, 3.0)  # a ramp has no detail to lose (away from the ends)
    assert kept.dtype == np.float32 and np.abs(kept - smooth)[:, 6:-6].max() < 1.0
    for bad in (0.5, 100.0):
        with pytest.raises(InvalidInputError, match="reduce_detail"):
            reduce_detail(image, bad)


# Four solid blocks on a grey frame: (x, y, w, h, RGB colour).
BLOCKS = (
    (30, 40, 20, 50, (250, 30, 30)),
    (100, 20, 12, 30, (30, 250, 30)),
    (150, 90, 40, 60, (30, 30, 250)),
    (60, 100, 16, 20, (250, 250, 30)),
)


def _blocks() -> tuple[np.ndarray, list[Box]]:
    image = np.full((160, 240, 3), 128, np.uint8)
    boxes = []
    for x, y, w, h, colour in BLOCKS:
        image[y : y + h, x : x + w] = colour
        boxes.append(Box(x, y, w, h))
    return image, boxes


@pytest.mark.parametrize(
    ("factor", "anchor"),
    [(2.0, (0.5, 0.5)), (1.37, (0.2, 0.9)), (3.0, (0.3, 0.4)), (0.5, (0.5, 0.5)), (0.61, (1, 0))],
)
def test_zoom_boxes_land_exactly_on_their_pixels(factor: float, anchor: tuple[float, float]):
    image, boxes = _blocks()
    out, moved = zoom(image, boxes, factor, anchor, min_visible=0.0)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert len(moved) >= 1
    for box in moved:
        colour = np.array(next(c for *_, c in BLOCKS if _same(box, c, out)))
        # Around the box, the pixels nearer the block's colour than the grey frame
        # are exactly those under the moved box: interpolation blends each edge
        # symmetrically, so the halfway level crosses where the edge is.
        x0, y0 = max(int(box.x) - 3, 0), max(int(box.y) - 3, 0)
        near = out[y0 : int(box.y2) + 4, x0 : int(box.x2) + 4].astype(int)
        mask = np.abs(near - colour).sum(axis=2) < np.abs(near - 128).sum(axis=2)
        ys, xs = np.nonzero(mask)
        assert abs(x0 + xs.min() - box.x) <= 1 and abs(x0 + xs.max() + 1 - box.x2) <= 1, box
        assert abs(y0 + ys.min() - box.y) <= 1 and abs(y0 + ys.max() + 1 - box.y2) <= 1, box


def _same(box: Box, colour: tuple[int, int, int], image: np.ndarray) -> bool:
    """Whether the centre pixel of ``box`` in ``image`` has ``colour``."""
    cy, cx = int(box.y + box.h / 2), int(box.x + box.w / 2)
    return bool(np.all(np.abs(image[cy, cx].astype(int) - colour) < 20))


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_zoom_keeps_the_content_under_each_box(factor: float):
    """A textured patch under a box before the zoom is the patch under it after."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (160, 240, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (9, 9), 3)
    boxes = [Box(96, 56, 32, 40), Box(80, 72, 24, 16)]  # inside the central crop at 2x
    out, moved = zoom(image, boxes, factor)
    interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
    for before, after in zip(boxes, moved, strict=True):
        assert (after.w, after.h) == (before.w * factor, before.h * factor)
        x, y, w, h = (round(v) for v in (after.x, after.y, after.w, after.h))
        patch = image[int(before.y) : int(before.y2), int(before.x) : int(before.x2)]
        expected = cv2.resize(patch, (w, h), interpolation=interpolation)
        got = out[y : y + h, x : x + w]
        # inside the box (bilinear reads one neighbour across each edge)
        diff = np.abs(got[1:-1, 1:-1].astype(int) - expected[1:-1, 1:-1])
        assert diff.max() <= 3, (factor, diff.max())


def test_zoom_cuts_boxes_by_the_visible_area_rule():
    image = np.zeros((100, 200, 3), np.uint8)
    # Zoom 2 at the top-left keeps the window x < 100, y < 50.
    boxes = [
        Box(10, 10, 20, 20, track_id=1),  # inside
        Box(90, 10, 20, 20, track_id=2),  # half in: kept, clipped, still a positive
        Box(95, 10, 20, 20, track_id=3),  # a quarter in: clipped and ignore
        Box(150, 60, 20, 20, track_id=4),  # outside: dropped
        Box(20, 20, 10, 10, ignore=True, track_id=5),  # ignore stays ignore
    ]
    _, moved = zoom(image, boxes, 2.0, anchor=(0.0, 0.0))
    by_id = {b.track_id: b for b in moved}
    assert set(by_id) == {1, 2, 3, 5}
    assert by_id[1] == Box(20, 20, 40, 40, track_id=1)
    assert by_id[2] == Box(180, 20, 20, 40, track_id=2) and not by_id[2].ignore
    assert by_id[3] == Box(190, 20, 10, 40, ignore=True, track_id=3)
    assert by_id[5].ignore
    assert zoom_boxes(boxes, 200, 100, 2.0, (0.0, 0.0)) == moved


def test_zoom_dataset_moves_every_record_as_zoom_about_the_centre_does():
    boxes = (Box(90, 40, 20, 20, track_id=1), Box(0, 0, 10, 10, track_id=2))
    records = [ImageRecord(i, Path(f"{i}.png"), 200, 100, boxes) for i in range(2)]
    data = Dataset(records, name="cam", labels=("person", "rider"))
    zoomed = zoom_dataset(data, 2.0)
    assert zoomed.name == "cam@zoom2" and zoomed.labels == data.labels
    image = np.zeros((100, 200, 3), np.uint8)
    for before, after in zip(data, zoomed, strict=True):
        assert after.boxes == zoom(image, before.boxes, 2.0)[1]
        assert after.boxes == (Box(80, 30, 40, 40, track_id=1),)  # the corner box is cut
        assert (after.width, after.height, after.source) == (200, 100, before.source)
    assert data[0].boxes == boxes  # the records themselves are not changed


def test_zoom_out_puts_the_image_on_a_mean_coloured_canvas():
    image, boxes = _blocks()
    out, moved = zoom(image, boxes, 0.5)
    assert out.shape == image.shape
    mean = np.rint(image.reshape(-1, 3).mean(axis=0))
    np.testing.assert_array_equal(out[0, 0], mean)  # the canvas
    assert out[:40].std(axis=(0, 1)).max() == 0
    assert [(b.w, b.h) for b in moved] == [(w / 2, h / 2) for _, _, w, h, _ in BLOCKS]
    assert not any(b.ignore for b in moved)  # nothing is cut when zooming out
    grey, _ = zoom(image, boxes, 0.5, fill=(0, 0, 0))
    assert grey[0, 0].tolist() == [0, 0, 0]
    same, kept = zoom(image, boxes, 1.0)
    assert same is image and list(kept) == boxes
    single, _ = zoom(image[:, :, 0], [], 0.5)
    assert single.shape == image.shape[:2]


def test_random_zoom_is_seeded_log_uniform_and_holds_a_person():
    image, boxes = _blocks()
    factors = []
    for seed in range(200):
        out, moved, factor = random_zoom(image, boxes, np.random.default_rng(seed), (0.5, 2.0))
        again, moved_again, _ = random_zoom(image, boxes, np.random.default_rng(seed), (0.5, 2.0))
        assert np.array_equal(out, again) and moved == moved_again
        assert 0.5 <= factor <= 2.0
        factors.append(factor)
        if factor > 1:  # the window holds one whole block: it is still a clean positive
            assert any(not b.ignore for b in moved)
    # log-uniform: half of the draws below the geometric middle (1.0)
    assert 0.4 < np.mean(np.array(factors) < 1.0) < 0.6


def test_zoom_rejects_bad_arguments():
    image, boxes = _blocks()
    for factor in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="zoom factor"):
            zoom(image, boxes, factor)
    with pytest.raises(InvalidInputError, match="anchor"):
        zoom(image, boxes, 2.0, anchor=(1.5, 0.0))
    with pytest.raises(InvalidInputError, match="zoom_range"):
        random_zoom(image, boxes, np.random.default_rng(0), (2.0, 1.0))
