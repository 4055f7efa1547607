"""decode_detections: peaks of each head become default boxes, merged by NMS."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.trainer.evaluation.detections import (
    DEFAULT_BOXES,
    decode_detections,
    iou_matrix,
    local_maxima,
    nms,
)


def _blob(
    shape: tuple[int, int], row: int, col: int, peak: float, sigma: float = 6.0
) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return (peak * np.exp(-((ys - row) ** 2 + (xs - col) ** 2) / (2 * sigma**2))).astype(np.float32)


def test_one_peak_one_box_of_the_heads_size() -> None:
    probs = np.zeros((5, 480, 640), np.float32)
    probs[2] = _blob((480, 640), 200, 300, 0.9)
    boxes, scores = decode_detections(probs, threshold=0.5)
    assert boxes.shape == (1, 4) and scores.dtype == np.float32
    x, y, w, h = boxes[0]
    assert (w, h) == pytest.approx((80, 145))
    assert (x + w / 2, y + h / 2) == pytest.approx((300.5, 200.5))
    assert scores[0] == pytest.approx(0.9)


def test_boxes_scale_with_input_size_and_clip() -> None:
    probs = np.zeros((5, 240, 320), np.float32)
    probs[0] = _blob((240, 320), 120, 160, 0.8)
    probs[4] = _blob((240, 320), 5, 3, 0.7)  # at the top-left corner
    boxes, scores = decode_detections(probs, threshold=0.5)
    assert scores.tolist() == pytest.approx([0.8, 0.7])
    assert boxes[0].tolist() == pytest.approx([160.5 - 40, 120.5 - 67.5, 80, 135])
    # head 4 is 31x55 at 640x480 -> 15.5x27.5 here, centred at (3.5, 5.5), clipped at 0
    assert boxes[1].tolist() == pytest.approx([0, 0, 3.5 + 7.75, 5.5 + 13.75])


def test_nms_across_heads_and_threshold() -> None:
    probs = np.zeros((5, 480, 640), np.float32)
    probs[1] = _blob((480, 640), 240, 320, 0.7)  # 225x130
    probs[0] = _blob((480, 640), 241, 320, 0.95)  # 270x160, IoU with it ~0.68
    probs[3] = _blob((480, 640), 100, 50, 0.6)  # far away
    boxes, scores = decode_detections(probs, threshold=0.5, nms_iou=0.5)
    assert scores.tolist() == pytest.approx([0.95, 0.6])
    assert boxes[0][3] == pytest.approx(270)
    boxes, scores = decode_detections(probs, threshold=0.5, nms_iou=0.9, nms_contained=1.0)
    assert scores.tolist() == pytest.approx([0.95, 0.7, 0.6])
    _, scores = decode_detections(probs, threshold=0.8)
    assert scores.tolist() == pytest.approx([0.95])
    empty_boxes, empty_scores = decode_detections(np.zeros((5, 48, 64), np.float32))
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def _naive_maxima(m: np.ndarray, threshold: float, r: int) -> np.ndarray:
    out = []
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            window = m[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            if m[i, j] > threshold and m[i, j] >= window.max():
                out.append((i, j))
    return np.array(out, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_local_maxima_match_naive_reference(radius: int) -> None:
    rng = np.random.default_rng(radius)
    for _ in range(5):
        m = rng.random((17, 23)).astype(np.float32)
        m[3:6, 3:6] = 0.99  # a plateau: every pixel of it is a peak
        assert np.array_equal(local_maxima(m, 0.3, radius), _naive_maxima(m, 0.3, radius))


def _naive_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(iou_matrix(boxes[i], boxes[k])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_naive_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        xy = rng.uniform(0, 100, (40, 2))
        boxes = np.concatenate([xy, rng.uniform(10, 40, (40, 2))], axis=1)
        scores = rng.choice([0.2, 0.5, 0.7, 0.9], 40)  # ties included
        assert nms(boxes, scores, 0.4).tolist() == _naive_nms(boxes, scores, 0.4)


def test_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]])
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([50 / 150, 0, 1])


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="K, H, W"):
        decode_detections(np.zeros((480, 640), np.float32))
    with pytest.raises(InvalidInputError, match="default boxes"):
        decode_detections(np.zeros((3, 48, 64), np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        decode_detections(np.full((5, 8, 8), np.nan, np.float32))


def test_default_boxes_agree_with_trainer_and_synth() -> None:
    from alscout.trainer.synth import PAPER_DEFAULT_BOXES as SYNTH_BOXES

    assert SYNTH_BOXES == DEFAULT_BOXES
    model = pytest.importorskip("alscout.trainer.model")
    assert tuple(map(tuple, model.PAPER_DEFAULT_BOXES)) == DEFAULT_BOXES


def test_detect_moves_boxes_at_most_half_a_heads_stride() -> None:
    """``subpixel`` (the default) re-centres each box between its head's coarse samples;
    the scores and box sizes are the pixel decoder's, NMS aside."""
    import torch

    from alscout.trainer.model import Detector, DetectorConfig, detect

    torch.manual_seed(0)
    model = Detector(DetectorConfig(width=4, head_channels=8, fires_per_level=0))
    image = np.random.default_rng(0).integers(0, 255, (128, 192, 3), np.uint8)
    [(pixel, pixel_scores)] = detect(model, [image], nms_iou=1.0, nms_contained=1.0, subpixel=False)
    [(refined, scores)] = detect(model, [image], nms_iou=1.0, nms_contained=1.0)
    assert len(scores) > 10
    np.testing.assert_array_equal(np.sort(scores), np.sort(pixel_scores))
    order_p, order_r = np.lexsort((pixel[:, 3], pixel_scores)), np.lexsort((refined[:, 3], scores))
    pixel, refined = pixel[order_p], refined[order_r]
    interior = (pixel[:, 0] > 0) & (pixel[:, 1] > 0) & (refined[:, 0] > 0) & (refined[:, 1] > 0)
    interior &= (pixel[:, 0] + pixel[:, 2] < 191) & (pixel[:, 1] + pixel[:, 3] < 127)
    interior &= (refined[:, 0] + refined[:, 2] < 191) & (refined[:, 1] + refined[:, 3] < 127)
    np.testing.assert_allclose(refined[interior, 2:], pixel[interior, 2:], atol=1e-4)
    shift = np.abs(refined[interior, :2] - pixel[interior, :2])
    assert shift.max() <= 64 / 2 + 1e-3 and shift.max() > 0
