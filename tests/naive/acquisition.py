"""Plain-loop references of the detection-based acquisition functions (docs/scoring.md).

Written for clarity, not speed: a pixel loop for the local maxima, a pair loop for the
non-maximum suppression, float64 throughout. Small maps only.
"""

from __future__ import annotations

import math

import numpy as np

from naive.scoring import naive_aggregate, naive_pixel_scores


def naive_local_maxima(values: np.ndarray, threshold: float, peak_radius: int = 1) -> np.ndarray:
    """``[P, 2]`` (row, col) of pixels > threshold with no larger value within the radius,
    row-major, by a loop over pixels and their windows."""
    h, w = values.shape
    peaks = []
    for i in range(h):
        for j in range(w):
            v = float(values[i, j])
            window = values[
                max(0, i - peak_radius) : i + peak_radius + 1,
                max(0, j - peak_radius) : j + peak_radius + 1,
            ]
            if v > threshold and v >= float(window.max()):
                peaks.append((i, j))
    return np.asarray(peaks, np.int64).reshape(-1, 2)


def naive_candidates(
    probs: np.ndarray,
    boxes_640: list[tuple[float, float]],
    threshold: float,
    nms_iou: float = 0.5,
    peak_radius: int = 1,
    nms_contained: float = 0.65,
) -> list[float]:
    """Confidences of the detections kept by greedy NMS, highest first: a box goes when
    its IoU with a kept one is > ``nms_iou``, when more than ``nms_contained`` of its
    own area lies inside a kept one, or when more than that of a kept one's area lies
    inside it and the kept one's centre is in its central half."""
    k_heads, h, w = probs.shape
    found: list[tuple[float, tuple[float, float, float, float]]] = []
    for k in range(k_heads):
        bh, bw = boxes_640[k][0] * h / 480.0, boxes_640[k][1] * w / 640.0
        for i in range(h):
            for j in range(w):
                p = float(probs[k, i, j])
                if not p > threshold:
                    continue
                peak = True
                for a in range(max(0, i - peak_radius), min(h, i + peak_radius + 1)):
                    for b in range(max(0, j - peak_radius), min(w, j + peak_radius + 1)):
                        if float(probs[k, a, b]) > p:
                            peak = False
                if not peak:
                    continue
                cy, cx = i + 0.5, j + 0.5
                x1, y1 = min(max(cx - bw / 2, 0), w), min(max(cy - bh / 2, 0), h)
                x2, y2 = min(max(cx + bw / 2, 0), w), min(max(cy + bh / 2, 0), h)
                found.append((p, (x1, y1, x2, y2)))
    kept = naive_nms([box for _, box in found], [p for p, _ in found], nms_iou, nms_contained)
    return [found[n][0] for n in kept]


def naive_nms(
    boxes: list[tuple[float, float, float, float]],
    scores: list[float],
    nms_iou: float,
    nms_contained: float,
) -> list[int]:
    """Greedy NMS pair by pair over (x1, y1, x2, y2) boxes: indices kept, highest
    score first (equal scores: lower index first). A box goes when its IoU with a kept
    one is > ``nms_iou``, when more than ``nms_contained`` of its own area lies inside a
    kept one, or when more than that of a kept one's area lies inside it and the kept
    one's centre is in its central half (1.0: IoU alone)."""
    order = sorted(range(len(scores)), key=lambda n: -scores[n])
    kept: list[int] = []
    for n in order:
        if all(
            _iou(boxes[n], boxes[m]) <= nms_iou
            and _inside(boxes[n], boxes[m]) <= nms_contained
            and not (
                _inside(boxes[m], boxes[n]) > nms_contained
                and _centre_in_middle(boxes[m], boxes[n])
            )
            for m in kept
        ):
            kept.append(n)
    return kept


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The share of box a's area that lies inside box b."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return iw * ih / area if area > 0 else 0.0


def _centre_in_middle(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether box a's centre lies in the middle half of box b's width and height."""
    dx = abs((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2)
    dy = abs((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2)
    return dx <= (b[2] - b[0]) / 4 and dy <= (b[3] - b[1]) / 4


def naive_least_confidence(probs, boxes_640, threshold=0.05, nms_iou=0.5) -> float:
    """max over candidates of 1 - max(c, 1 - c); 0 without candidates."""
    confidences = naive_candidates(probs, boxes_640, threshold, nms_iou)
    return max((1.0 - max(c, 1.0 - c) for c in confidences), default=0.0)


def naive_instance_count(probs, boxes_640, threshold=0.5, nms_iou=0.5) -> int:
    """Detections above the threshold after NMS."""
    return len(naive_candidates(probs, boxes_640, threshold, nms_iou))


def naive_divergence_count(probs, boxes_640, radius=9, region=30, threshold=0.5) -> float:
    """The paper's z times (1 + instance count)."""
    z = naive_aggregate(naive_pixel_scores(probs, radius, "divergence"), region)
    return float(z) * (1 + naive_instance_count(probs, boxes_640, threshold))


def naive_refined_centre(
    values: np.ndarray, row: int, col: int, step: float
) -> tuple[float, float]:
    """One peak's sub-pixel centre, one axis at a time, written out with scalars."""
    offset = max(1, round(step))

    def log_odds(p: float) -> float:
        p = min(max(float(p), 1e-6), 1.0 - 1e-6)
        return math.log(p / (1.0 - p))

    centre = []
    for axis, position in enumerate((row, col)):
        extent = values.shape[axis]
        if position - offset < 0 or position + offset >= extent:
            centre.append(position + 0.5)
            continue
        pick = (lambda q: values[q, col]) if axis == 0 else (lambda q: values[row, q])
        a, b, c = (log_odds(pick(q)) for q in (position - offset, position, position + offset))
        bend = a - 2 * b + c
        if bend >= 0:
            centre.append(position + 0.5)
            continue
        vertex = min(max(0.5 * (a - c) / bend, -0.5), 0.5)
        centre.append(position + 0.5 + offset * vertex)
    return centre[0], centre[1]
