"""bench/miss_anatomy.py: the FPPI = 1 cut, near and far misses, and the loose-fit share."""

from __future__ import annotations

import numpy as np
import pytest

#: The paper's default heights at 480x360 (0.75 of 270, 225, 145, 80, 55).
HEIGHTS = np.array([202.5, 168.75, 108.75, 60.0, 41.25])


@pytest.fixture(scope="module")
def anatomy(bench_script):
    return bench_script("miss_anatomy")


def _boxes(*rows) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 4)


def test_nearest_head_is_nearest_in_log_height(anatomy):
    # 81 px: 108.75 / 81 = 1.343 against 81 / 60 = 1.35, so head 2 by a hair
    heights = np.array([45.0, 55.0, 81.0, 100.0, 170.0, 400.0])
    assert anatomy.nearest_head(heights, HEIGHTS).tolist() == [4, 3, 2, 2, 1, 0]


def test_the_cut_keeps_at_most_one_false_positive_per_image(anatomy):
    person = (_boxes((100, 100, 40, 100)), np.zeros(1, bool))
    hit = (100, 100, 40, 100)
    far = (300, 10, 40, 100)
    detections = [
        (_boxes(hit, far, (300, 150, 40, 100)), np.array([0.9, 0.8, 0.7])),
        (_boxes(far, hit), np.array([0.95, 0.6])),
    ]
    # false positives by score: 0.95, 0.8, then 0.7 is the third for two images
    assert anatomy.threshold_at_fppi1(detections, [person, person]) == pytest.approx(0.8)
    # with no false positive at all the cut is the lowest score
    assert anatomy.threshold_at_fppi1([(_boxes(hit), np.array([0.3]))], [person]) == 0.3


def test_near_and_far_misses_with_the_box_that_came_closest(anatomy):
    gt = _boxes((100, 100, 41, 100), (300, 100, 20, 50))
    truths = [(gt, np.zeros(2, bool))]
    # a head-3 box (60 px) centred on the 100 px person, 5 px to its right:
    # standardised IoU about (60 / 100)^2, a near miss; nothing near the other person
    box = (120.5 - 12.3 + 5, 120, 24.6, 60)
    far_fp = (10, 10, 20, 41.25)
    detections = [(_boxes(box, far_fp), np.array([0.9, 0.8]))]
    misses, false = anatomy.anatomy(detections, truths, HEIGHTS, threshold=0.5)
    assert misses.shape == (2, 6)
    near, far = misses[misses[:, 0] == 100][0], misses[misses[:, 0] == 50][0]
    assert 0.3 <= near[1] < 0.5 and near[2] == 3
    assert near[3] == pytest.approx(0.6) and near[4] == pytest.approx(5 / 41) and near[5] == 0
    assert far[1] == 0.0
    assert dict(false) == {3: 1, 4: 1}
    # below the cut nothing is kept: both people are far misses, no false positive
    misses, false = anatomy.anatomy(detections, truths, HEIGHTS, threshold=0.95)
    assert (misses[:, 1] == 0).all() and (misses[:, 2] == -1).all() and not false


def test_loose_share_counts_people_between_default_boxes(anatomy):
    gt = _boxes((0, 0, 40, 100), (0, 0, 33, 81), (0, 0, 30, 75))
    ignored = _boxes((0, 0, 33, 81))
    # 100 px: (100 / 108.75)^2 = .85; 81 px: (60 / 81)^2 = .55; 75 px: (60 / 75)^2 = .64
    truths = [(gt, np.zeros(3, bool)), (ignored, np.ones(1, bool))]
    assert anatomy.loose_share(truths, HEIGHTS) == "66.7% (< 0.65: 66.7%)"
