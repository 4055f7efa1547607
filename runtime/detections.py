"""From the heads' probability maps to scored boxes (SPEC §3, "Detections"), torch-free.

Each head ``k`` says, per pixel, "a pedestrian that fits default box ``k`` is centred
here". A pixel that is a local maximum of its head's map (no larger value in its
``(2 r + 1)^2`` neighbourhood, ``r = peak_radius``) and above the threshold becomes a box of
that head's default size, scaled from 640x480 to the map's size, centred on the pixel's
centre (``(j + 0.5, i + 0.5)`` in pixel-edge coordinates) or, given the heads' strides,
on the peak's sub-pixel centre between the head's coarse samples (:func:`refine_peaks`),
clipped to the image. Boxes of all heads are then merged by greedy non-maximum
suppression: a box is dropped when its IoU with a kept, higher-scored box exceeds
``nms_iou`` (0.5), or when their intersection is more than ``nms_contained`` (0.65) of
the smaller box's area (the ``ovrDnm = 'min'`` overlap of Dollar's ``bbNms``, 0.65 as
his ACF pedestrian detector uses it) in one of two cases: the dropped box is the smaller
one (inside the kept box), or it is the larger one and the kept box's centre lies in its
central half (around the kept box, about concentric). Heads have fixed box sizes, so a
smaller head firing on a larger person's legs or torso gives a box inside the person's,
and a larger head firing on a person a smaller head found gives a box around it: IoU
alone (0.43 for a head-4 box centred in a head-3 box, 0.34 for a head-3 box in a head-2
box) keeps either as a false positive. The centre condition keeps a larger person whose
box merely reaches over a smaller, better-scored one next to them, which plain ``'min'``
NMS drops (docs/detector.md, "Decoding"). Before 2026-12-03 only the first case was
suppressed.

It lives in the runtime so that the vehicle's detection-based acquisition functions
(:mod:`alscout.runtime.acquisition`) decode as the evaluation does (with pixel peaks:
their scores are the peaks' probabilities, which refinement leaves alone);
:mod:`alscout.trainer.evaluation.detections` re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from alscout.errors import InvalidInputError

__all__ = [
    "REFERENCE_SIZE",
    "DEFAULT_BOXES",
    "local_maxima",
    "iou_matrix",
    "nms",
    "NMS_IOU",
    "NMS_CONTAINED",
    "NMS_OVERLAP",
    "BOX_SIZES",
    "SIZE_RADIUS",
    "refine_peaks",
    "grid_step",
    "decode_detections",
]

#: (width, height) at which default boxes are given.
REFERENCE_SIZE = (640, 480)
#: The paper's (height, width) default boxes at 640x480, head 0 first (§3). Defined here,
#: where no PyTorch is imported, so that the model and the synthetic data take it from
#: here (as ``PAPER_DEFAULT_BOXES``) and evaluation and the vehicle run without torch.
DEFAULT_BOXES: tuple[tuple[float, float], ...] = (
    (270.0, 160.0),
    (225.0, 130.0),
    (145.0, 80.0),
    (80.0, 50.0),
    (55.0, 31.0),
)

#: NMS drops a box whose IoU with a kept, higher-scored box is above this.
NMS_IOU = 0.5
#: NMS drops a box with more than this fraction of its area inside a kept,
#: higher-scored box, or a box that holds more than this fraction of a kept box's area
#: around that box's centre (1.0: never; IoU alone, as before 2026-12-02).
NMS_CONTAINED = 0.65
#: Which contained boxes NMS drops (shipped thresholds record it: a model calibrated
#: with the decoder before 2026-12-03, which dropped only boxes inside a kept one, is
#: not served with thresholds of another decoder).
NMS_OVERLAP = "inside, or around a central higher-scored box"
#: How a peak's box size is chosen: "head" (SPEC §3: the head's default box, the
#: default) or "interpolated" (between the neighbouring heads' boxes, weighted by
#: their probabilities there; an extension beyond SPEC, off by default).
BOX_SIZES = ("head", "interpolated")
#: "interpolated": a neighbouring head's probability is its largest within this many
#: pixels of the peak (their centres need not fall on the same pixel).
SIZE_RADIUS = 2
#: Probabilities are clipped to [EPS, 1 - EPS] before the log-odds of :func:`refine_peaks`.
LOGIT_EPS = 1e-6


def local_maxima(score_map: np.ndarray, threshold: float, peak_radius: int = 1) -> np.ndarray:
    """Peaks of one map: ``[P, 2]`` int64 ``(row, col)``, row-major order.

    ``score_map``: ``[H, W]``. A pixel is a peak when its value is > ``threshold`` and
    >= every value within ``peak_radius`` (outside the map counts as -inf). Equal
    neighbours on a plateau are all peaks; NMS merges them.
    """
    if score_map.ndim != 2:
        raise InvalidInputError(f"score_map must be [H, W], got shape {score_map.shape}")
    if peak_radius < 0:
        raise InvalidInputError(f"peak_radius must be >= 0, got {peak_radius}")
    values = np.ascontiguousarray(score_map, dtype=np.float32)
    above = values > threshold
    if not above.any():
        return np.zeros((0, 2), np.int64)
    # A peak equals the maximum of its window: OpenCV's dilation (a max filter; the
    # border outside the map is -inf) does it in one vectorised pass, ~20x faster than
    # comparing (2r+1)^2 - 1 shifted copies, which matters on the vehicle.
    side = 2 * peak_radius + 1
    window_max = cv2.dilate(
        values,
        np.ones((side, side), np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=-np.inf,
    )
    return np.argwhere(above & (values >= window_max))


def grid_step(size: int, stride: int) -> float:
    """Spacing in pixels of the samples of a map computed at ``stride`` and resized
    bilinearly (``align_corners=False``) to ``size`` pixels: ``size / ceil(size / stride)``
    (a ``ceil_mode`` network has ``ceil(size / stride)`` samples along that axis)."""
    if size < 1 or stride < 1:
        raise InvalidInputError(f"size and stride must be >= 1, got {size} and {stride}")
    return size / math.ceil(size / stride)


def refine_peaks(
    score_map: np.ndarray, peaks: np.ndarray, step: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres of the ``peaks [P, 2]`` (row, col) of a probability map
    ``[H, W]`` that is a coarser map resized bilinearly, its samples ``step`` =
    (rows, cols) pixels apart (:func:`grid_step`).

    A bilinear resize has its local maxima on the coarse samples, so a pixel peak is
    off the object's centre by up to half a sample (8 px for a head computed at stride
    16). Along each axis, the centre becomes the vertex of the parabola through the
    map's log-odds at the peak and one sample either side (Taylor refinement of a
    heat-map peak, as keypoint decoders do), moved at most half a sample. An axis where
    the three values do not bend down, or where a side sample falls outside the map,
    keeps the pixel centre. Returns ``(rows [P], cols [P])`` float64 in pixel-edge
    coordinates (the pixel centre of an unrefined peak is ``i + 0.5``).
    """
    peaks = np.asarray(peaks, np.int64).reshape(-1, 2)
    height, width = score_map.shape
    centres = []
    for axis, (extent, spacing) in enumerate(zip((height, width), step, strict=True)):
        position = peaks[:, axis]
        offset = max(1, round(spacing))
        inside = (position - offset >= 0) & (position + offset < extent)
        before, after = peaks.copy(), peaks.copy()
        before[:, axis] = np.where(inside, position - offset, position)
        after[:, axis] = np.where(inside, position + offset, position)
        a, b, c = (_log_odds(score_map[q[:, 0], q[:, 1]]) for q in (before, peaks, after))
        bend = a - 2.0 * b + c
        ok = inside & (bend < 0)
        vertex = np.divide(0.5 * (a - c), bend, out=np.zeros_like(bend), where=ok)
        centres.append(position + 0.5 + offset * np.clip(vertex, -0.5, 0.5))
    return centres[0], centres[1]


def _log_odds(values: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(values, np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair: ``a [M, 4]``, ``b [N, 4]`` (x, y, w, h) -> ``[M, N]`` float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None, :]) - np.maximum(a[:, 0, None], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None, :]) - np.maximum(a[:, 1, None], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    contained_threshold: float = 1.0,
) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first.

    ``boxes``: ``[M, 4]`` (x, y, w, h); ``scores``: ``[M]``. A box is dropped when its
    IoU with a kept, higher-scored box is > ``iou_threshold``; or when more than
    ``contained_threshold`` of its own area lies inside that box; or when more than
    ``contained_threshold`` of that box's area lies inside it and that box's centre
    is in its central half (a larger box around the same person). 1.0: IoU alone.
    Equal scores keep the lower index first.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    boxes = np.asarray(boxes, np.float64)
    areas = boxes[:, 2] * boxes[:, 3]
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        overlaps = iou_matrix(boxes[best], boxes[rest])[0]
        kept = overlaps <= iou_threshold
        if contained_threshold < 1.0:
            inside = _intersections(boxes[best], boxes[rest])
            own = np.divide(inside, areas[rest], out=np.zeros_like(inside), where=areas[rest] > 0)
            kept &= own <= contained_threshold
            if areas[best] > 0:
                around = (inside / areas[best] > contained_threshold) & _central(
                    boxes[best], boxes[rest]
                )
                kept &= ~around
        order = rest[kept]
    return np.asarray(keep, np.int64)


def _central(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Whether the centre of one ``[4]`` box lies in the central half (the middle half
    of the width and of the height) of each of ``[M, 4]`` boxes (x, y, w, h)."""
    dx = np.abs(box[0] + box[2] / 2 - (others[:, 0] + others[:, 2] / 2))
    dy = np.abs(box[1] + box[3] / 2 - (others[:, 1] + others[:, 3] / 2))
    return (dx <= others[:, 2] / 4) & (dy <= others[:, 3] / 4)


def _intersections(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection areas of one ``[4]`` box with ``[M, 4]`` boxes (x, y, w, h)."""
    iw = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3]) - np.maximum(box[1], others[:, 1])
    return np.clip(iw, 0, None) * np.clip(ih, 0, None)


def decode_detections(
    probs: np.ndarray,
    default_boxes: Sequence[tuple[float, float]] = DEFAULT_BOXES,
    threshold: float = 0.5,
    nms_iou: float = NMS_IOU,
    peak_radius: int = 1,
    max_candidates: int = 5000,
    nms_contained: float = NMS_CONTAINED,
    box_size: str = "head",
    strides: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores from one frame's head maps.

    ``probs``: ``[K, H, W]`` probabilities in [0, 1] at the image's resolution.
    ``default_boxes``: K ``(height, width)`` in pixels at 640x480. ``threshold``: a peak
    must exceed it. ``nms_iou``: IoU above which the lower-scored box is suppressed;
    ``nms_contained``: the share of the smaller box's area in the intersection above
    which the lower-scored box is suppressed too when it lies inside the other or
    around the other's centre (:func:`nms`; 1.0: IoU alone). ``box_size``:
    "head" (the head's default box, SPEC §3) or "interpolated": a peak of head k gets
    the geometric mean of heads k-1, k, k+1's default heights (and widths), weighted
    by their probabilities (head k's at the peak, its neighbours' largest within
    :data:`SIZE_RADIUS` pixels), so a person between two default sizes, whom both
    heads see, gets a box between them. ``strides``: each head's stride in pixels of
    ``probs`` (the network level it is computed at, e.g. 64, 32, 16, 8, 4 for the
    paper's detector; ``DetectorConfig.head_strides``): when given, each peak's box
    is centred on its sub-pixel centre (:func:`refine_peaks`) instead of the pixel's.
    ``max_candidates``: the highest-scored peaks kept before NMS (bounds its cost at
    very low thresholds). Returns ``boxes [M, 4]`` float32 (x, y, w, h) in pixels and
    ``scores [M]`` float32, by decreasing score.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise InvalidInputError(f"probs must be [K, H, W], got shape {probs.shape}")
    K, H, W = probs.shape
    if len(default_boxes) != K:
        raise InvalidInputError(f"{K} heads but {len(default_boxes)} default boxes")
    if not 0 <= nms_iou <= 1:
        raise InvalidInputError(f"nms_iou must be in [0, 1], got {nms_iou}")
    if not 0 <= nms_contained <= 1:
        raise InvalidInputError(f"nms_contained must be in [0, 1], got {nms_contained}")
    if box_size not in BOX_SIZES:
        raise InvalidInputError(f"box_size must be one of {BOX_SIZES}, got {box_size!r}")
    if np.isnan(probs).any():
        raise InvalidInputError("probs contain NaN")
    if strides is not None and (
        len(strides) != K or any(isinstance(v, bool) or int(v) != v or v < 1 for v in strides)
    ):
        raise InvalidInputError(f"strides must be {K} integers >= 1, got {strides!r}")
    sx, sy = W / REFERENCE_SIZE[0], H / REFERENCE_SIZE[1]
    sizes = np.log(np.asarray(default_boxes, np.float64).reshape(K, 2))
    near = _neighbourhood_max(probs) if box_size == "interpolated" else None
    all_boxes, all_scores = [], []
    for k in range(K):
        peaks = local_maxima(probs[k], threshold, peak_radius)
        if not len(peaks):
            continue
        if near is None:
            bh, bw = default_boxes[k][0] * sy, default_boxes[k][1] * sx
        else:
            bh, bw = _interpolated_sizes(probs, near, sizes, k, peaks)
            bh, bw = bh * sy, bw * sx
        if strides is None:
            cy, cx = peaks[:, 0] + 0.5, peaks[:, 1] + 0.5
        else:
            step = (grid_step(H, int(strides[k])), grid_step(W, int(strides[k])))
            cy, cx = refine_peaks(probs[k], peaks, step)
        x1, y1 = np.clip(cx - bw / 2, 0, W), np.clip(cy - bh / 2, 0, H)
        x2, y2 = np.clip(cx + bw / 2, 0, W), np.clip(cy + bh / 2, 0, H)
        all_boxes.append(np.stack([x1, y1, x2 - x1, y2 - y1], axis=1))
        all_scores.append(probs[k][peaks[:, 0], peaks[:, 1]].astype(np.float64))
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    if len(scores) > max_candidates:
        top = np.argsort(-scores, kind="stable")[:max_candidates]
        boxes, scores = boxes[top], scores[top]
    keep = nms(boxes, scores, nms_iou, nms_contained)
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32)


def _neighbourhood_max(probs: np.ndarray) -> np.ndarray:
    """Each head's largest probability within :data:`SIZE_RADIUS` pixels: ``[K, H, W]``."""
    side = 2 * SIZE_RADIUS + 1
    kernel = np.ones((side, side), np.uint8)
    return np.stack([cv2.dilate(np.ascontiguousarray(m, np.float32), kernel) for m in probs])


def _interpolated_sizes(
    probs: np.ndarray, near: np.ndarray, log_sizes: np.ndarray, k: int, peaks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths (at 640x480) of head ``k``'s ``peaks [P, 2]``: the
    probability-weighted geometric mean of heads k-1, k, k+1's default boxes."""
    rows, cols = peaks[:, 0], peaks[:, 1]
    heads = [j for j in (k - 1, k, k + 1) if 0 <= j < probs.shape[0]]
    weights = np.stack(
        [(probs[j] if j == k else near[j])[rows, cols].astype(np.float64) for j in heads], axis=1
    )
    weights = np.maximum(weights, 1e-6)
    mean = weights @ log_sizes[heads] / weights.sum(axis=1, keepdims=True)  # [P, 2]
    return np.exp(mean[:, 0]), np.exp(mean[:, 1])
