"""alscout.runtime.detections: the torch-free decoder the acquisition functions share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alscout.runtime import detections
from alscout.runtime.detections import decode_detections, local_maxima

from naive.acquisition import naive_local_maxima, naive_nms, naive_refined_centre


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("peak_radius", [0, 1, 2, 5])
def test_local_maxima_equal_the_loop_reference_with_plateaus_and_ties(seed, peak_radius):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 30, 2))
    values = (rng.integers(0, 5, (h, w)) / 4).astype(np.float32)  # plateaus and ties
    for threshold in (-1.0, 0.0, 0.3, 0.9):
        np.testing.assert_array_equal(
            local_maxima(values, threshold, peak_radius),
            naive_local_maxima(values, threshold, peak_radius),
        )


def test_the_border_counts_as_minus_infinity():
    values = np.full((3, 4), -7.0, np.float32)  # a flat map below zero: all peaks
    assert len(local_maxima(values, -10.0)) == 12
    assert len(local_maxima(values, -7.0)) == 0  # not > threshold


def test_trainer_evaluation_re_exports_the_runtime_decoder():
    from alscout.trainer.evaluation import detections as evaluation

    for name in evaluation.__all__:
        assert getattr(evaluation, name) is getattr(detections, name)


def test_decode_keeps_the_strongest_of_overlapping_heads():
    probs = np.zeros((2, 48, 64), np.float32)
    probs[0, 20, 30] = 0.9
    probs[1, 20, 31] = 0.7  # the same person seen by the neighbouring head
    boxes, scores = decode_detections(probs, ((100.0, 50.0), (90.0, 45.0)), threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9])
    assert boxes.shape == (1, 4)


@pytest.mark.parametrize("contained", [0.3, 0.65, 1.0])
def test_nms_with_containment_equals_the_pairwise_reference(contained):
    rng = np.random.default_rng(int(contained * 100))
    for _ in range(10):
        xy = rng.uniform(0, 100, (40, 2))
        boxes = np.concatenate([xy, rng.uniform(5, 50, (40, 2))], axis=1)
        scores = rng.choice([0.2, 0.5, 0.7, 0.9], 40)  # ties included
        corners = [(x, y, x + w, y + h) for x, y, w, h in boxes.tolist()]
        expected = naive_nms(corners, scores.tolist(), 0.5, contained)
        assert detections.nms(boxes, scores, 0.5, contained).tolist() == expected


def test_a_smaller_head_inside_a_person_is_suppressed_by_default():
    # head 4 (55x31 at 640x480) firing on the legs of a person head 3 (80x50) found
    probs = np.zeros((5, 480, 640), np.float32)
    probs[3, 200, 300] = 0.9
    probs[4, 215, 300] = 0.8  # 15 px lower: its box lies inside the person's
    _, scores = decode_detections(probs, threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9])
    # IoU alone (the decoder before 2026-12-02) keeps it: 0.43 < 0.5
    _, scores = decode_detections(probs, threshold=0.5, nms_contained=1.0)
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    with pytest.raises(detections.InvalidInputError, match="nms_contained"):
        decode_detections(probs, nms_contained=1.5)


def test_a_larger_head_around_a_better_scored_person_is_suppressed_too():
    # the other way round: head 3 (80x50) found the person, head 2 (145x80) fired on
    # them with a lower score; its box holds the person's, IoU (80*50)/(145*80) = 0.34
    probs = np.zeros((5, 480, 640), np.float32)
    probs[3, 200, 300] = 0.9
    probs[2, 205, 300] = 0.8
    boxes, scores = decode_detections(probs, threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9]) and boxes[0, 3] == pytest.approx(80)
    _, scores = decode_detections(probs, threshold=0.5, nms_contained=1.0)
    assert scores.tolist() == pytest.approx([0.9, 0.8])


def test_a_larger_person_reaching_over_a_smaller_better_scored_one_is_kept():
    # two people side by side: the larger box (head 2, 145x80) holds most of the
    # smaller one's (head 4, 55x31), whose centre is near its edge, not its middle
    probs = np.zeros((5, 480, 640), np.float32)
    probs[4, 200, 330] = 0.9
    probs[2, 200, 300] = 0.8  # 30 px left: the small box lies in its right quarter
    boxes, scores = decode_detections(probs, threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    assert sorted(boxes[:, 3].round().tolist()) == [55, 145]


def _naive_interpolated(probs: np.ndarray, k: int, i: int, j: int) -> tuple[float, float]:
    """Height and width at 640x480 of head k's peak (i, j), by loops."""
    heads, h, w = probs.shape
    log_h = log_w = total = 0.0
    for n in (k - 1, k, k + 1):
        if not 0 <= n < heads:
            continue
        if n == k:
            weight = float(probs[k, i, j])
        else:
            weight = max(
                float(probs[n, a, b])
                for a in range(max(0, i - 2), min(h, i + 3))
                for b in range(max(0, j - 2), min(w, j + 3))
            )
        weight = max(weight, 1e-6)
        log_h += weight * np.log(detections.DEFAULT_BOXES[n][0])
        log_w += weight * np.log(detections.DEFAULT_BOXES[n][1])
        total += weight
    return float(np.exp(log_h / total)), float(np.exp(log_w / total))


def test_interpolated_box_sizes_equal_the_loop_reference():
    rng = np.random.default_rng(7)
    probs = (rng.random((5, 24, 32)) ** 6).astype(np.float32)  # sparse bright peaks
    boxes, scores = decode_detections(
        probs, threshold=0.5, box_size="interpolated", nms_iou=1.0, nms_contained=1.0
    )
    assert len(scores) >= 5
    seen = 0
    for k in range(5):
        for i, j in local_maxima(probs[k], 0.5):
            height, width = _naive_interpolated(probs, k, int(i), int(j))
            cx, cy = j + 0.5, i + 0.5
            x1, x2 = max(cx - width * 32 / 1280, 0), min(cx + width * 32 / 1280, 32)
            y1, y2 = max(cy - height * 24 / 960, 0), min(cy + height * 24 / 960, 24)
            expected = np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
            assert np.isclose(boxes, expected, atol=1e-4).all(axis=1).any(), (k, i, j)
            seen += 1
    assert seen == len(scores)


def test_a_person_between_two_heads_gets_a_box_between_them():
    probs = np.zeros((5, 480, 640), np.float32)
    probs[3, 200, 300] = 0.9  # head 3 (80x50) and head 2 (145x80) see one person
    probs[2, 201, 300] = 0.9
    boxes, _ = decode_detections(probs, threshold=0.5, box_size="interpolated")
    assert len(boxes) == 1  # the two boxes are now alike: NMS keeps one
    assert boxes[0][3] == pytest.approx(np.sqrt(80.0 * 145.0), rel=1e-3)
    head, _ = decode_detections(probs, threshold=0.5, nms_contained=1.0)  # SPEC's sizes
    assert sorted(head[:, 3].round().tolist()) == [80.0, 145.0]
    with pytest.raises(detections.InvalidInputError, match="box_size"):
        decode_detections(probs, box_size="regressed")


def _upsampled(coarse_logits: np.ndarray, stride: int) -> np.ndarray:
    """Probabilities of a coarse logit grid resized bilinearly (half-pixel centres, as
    the network's ``align_corners=False``) by ``stride``."""
    h, w = coarse_logits.shape
    fine = cv2.resize(coarse_logits.astype(np.float32), (w * stride, h * stride))
    return (1.0 / (1.0 + np.exp(-np.clip(fine, -30, 30)))).astype(np.float32)


@pytest.mark.parametrize("stride", [4, 8, 16])
@pytest.mark.parametrize("true_offset", [(-0.4, 0.3), (0.0, 0.0), (0.25, -0.45)])
def test_refined_peaks_find_a_centre_between_the_coarse_samples(stride, true_offset):
    """A person centred between the coarse samples: the pixel peak is off by up to half
    a sample, the refined centre by under a pixel."""
    centre = np.array([6.0 + true_offset[0], 9.0 + true_offset[1]])  # in coarse samples
    ys, xs = np.mgrid[:12, :18]
    coarse = 4.0 - 1.5 * ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2)  # a log-odds bump
    probs = _upsampled(coarse, stride)
    peaks = local_maxima(probs, 0.5)
    assert len(peaks) >= 1
    rows, cols = detections.refine_peaks(probs, peaks, (float(stride), float(stride)))
    truth = (centre + 0.5) * stride  # sample i sits at (i + 0.5) * stride, pixel edges
    pixel_error = np.abs(peaks + 0.5 - truth).max()
    refined_error = np.abs(np.stack([rows, cols], 1) - truth).max()
    assert refined_error < 1.0
    if max(abs(v) for v in true_offset) >= 0.25:
        assert pixel_error > 0.2 * stride  # what the pixel peak costs
    boxes, _ = decode_detections(
        np.stack([probs] * 5), threshold=0.5, strides=(stride,) * 5, nms_contained=1.0
    )
    x, y, w, h = boxes[0]
    assert (y + h / 2, x + w / 2) == pytest.approx(tuple(truth), abs=1.0)


def test_refined_peaks_equal_the_loop_reference_at_edges_and_plateaus():
    rng = np.random.default_rng(3)
    for stride in (1, 2, 3, 5, 8):
        values = rng.random((23, 31)).astype(np.float32)
        values[2:6, 2:12] = 0.97  # a plateau: flat, the pixel centre stays
        values[0, 0] = values[-1, -1] = 0.999  # corner peaks: no sample beyond the edge
        values[10, 10] = 1.0  # saturated: log-odds clipped, still finite
        peaks = local_maxima(values, 0.2)
        step = (stride * 1.1, float(stride))
        rows, cols = detections.refine_peaks(values, peaks, step)
        assert np.isfinite(rows).all() and np.isfinite(cols).all()
        for (i, j), r, c in zip(peaks.tolist(), rows, cols, strict=True):
            want_r = naive_refined_centre(values, i, j, step[0])[0]
            want_c = naive_refined_centre(values, i, j, step[1])[1]
            assert (r, c) == pytest.approx((want_r, want_c), abs=1e-9), (i, j, stride)
            assert abs(r - i - 0.5) <= 0.5 * max(1, round(step[0])) + 1e-9
        plateau = [(i, j) for i, j in peaks.tolist() if 3 <= i <= 4 and 3 <= j <= 10]
        assert plateau  # interior plateau pixels keep their pixel centres
        for i, j in plateau:
            k = peaks.tolist().index([i, j])
            if stride <= 1:
                assert (rows[k], cols[k]) == (i + 0.5, j + 0.5)


def test_grid_step_and_bad_strides_are_clear_errors():
    assert detections.grid_step(360, 16) == pytest.approx(360 / 23)
    assert detections.grid_step(480, 16) == 16.0
    probs = np.zeros((5, 48, 64), np.float32)
    with pytest.raises(detections.InvalidInputError, match="strides"):
        decode_detections(probs, strides=(16, 8))
    with pytest.raises(detections.InvalidInputError, match="strides"):
        decode_detections(probs, strides=(64, 32, 16, 8, 0))
    with pytest.raises(detections.InvalidInputError, match="stride"):
        detections.grid_step(10, 0)
