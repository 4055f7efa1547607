"""The Caltech pedestrian protocol (Dollár et al., TPAMI 2012): miss rate vs FPPI.

Per image (as ``bbGt('evalRes')`` in Piotr Dollár's toolbox): detections are taken by
decreasing score; each matches the free, non-ignore ground-truth box it overlaps most
with IoU >= 0.5, else the ignore region it overlaps most, where the overlap with an
ignore region is the intersection over the **detection's** area. A detection on an
ignore region is removed from the count (neither true nor false positive); an ignore
region may absorb any number of detections; an unmatched ignore box is not a miss.

Before matching, as ``dbEval`` does, every detection and every non-ignore
ground-truth box is standardised to the aspect ratio ``EvalConfig.aspect_ratio``
(Caltech's 0.41 = width / height): its width is set to 0.41 times its height about
its centre, height and centre kept. A box's width follows the person's pose (arms,
stride) and the annotator, so the protocol matches on height and position only;
ignore regions keep their shape. ``aspect_ratio=None`` matches the boxes as given
(alscout's evaluation before 2026-12-03).

As ``dbEval`` loads ground truth (``'xRng', [5 635], 'yRng', [5 475]`` on Caltech's
640x480 frames), a person whose box comes within ``EvalConfig.border`` pixels of the
frame's edge (5 at 640x480, scaled with the frame) is an ignore region: the frame cuts
them, so their box is the visible part only, and the protocol neither asks a detector
to find them nor counts a detection on them as false. ``border=None`` keeps them
(alscout's evaluation before session 10, 2026-12-03). The rule needs each frame's size:
:func:`evaluate_records` gives it, :func:`evaluate` takes ``image_sizes``.

Over the set (``bbGt('compRoc')``): the curve has one point per distinct score
threshold, plus the point of the infinite threshold (no detection: FPPI 0, miss rate
1). The log-average miss rate samples it at 9 FPPI values evenly spaced in log-space
in [1e-2, 1e0], taking at each the miss rate of the largest FPPI <= that value (so
where the curve never gets that low, the infinite threshold's miss rate 1 is taken),
clamps each at 1e-10 and returns ``exp(mean(log(mr)))``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.data.annotations import ImageRecord
from alscout.trainer.evaluation.detections import iou_matrix

__all__ = [
    "CALTECH_ASPECT_RATIO",
    "CALTECH_BORDER",
    "parse_border",
    "at_border",
    "EvalConfig",
    "EvalResult",
    "standardize_aspect",
    "parse_aspect_ratio",
    "add_protocol_arguments",
    "match_image",
    "evaluate",
    "evaluate_records",
    "record_truth",
]

_MR_FLOOR = 1e-10
#: The width / height to which ``dbEval`` standardises boxes before matching.
CALTECH_ASPECT_RATIO = 0.41
#: Pixels at 640x480 from the frame's edge within which ``dbEval`` ignores ground truth.
CALTECH_BORDER = 5.0
#: The frame size at which ``border`` is given (Caltech's).
_BORDER_FRAME = (640.0, 480.0)


@dataclass(frozen=True)
class EvalConfig:
    """``iou``: match threshold. ``ref_low``/``ref_high``/``ref_points``: where the
    log-average is sampled. ``min_height``: when set, ground truth lower than it
    becomes ignore and detections lower than ``min_height / 1.25`` are dropped
    (Caltech's height-range rule); None keeps the ignore flags as given.
    ``aspect_ratio``: the width / height detections and non-ignore ground truth are
    standardised to before matching (:func:`standardize_aspect`; Caltech's 0.41);
    None matches the boxes as given. ``border``: ground truth within this many pixels
    (at 640x480, scaled with the frame) of the frame's edge becomes ignore
    (Caltech's 5; needs the frames' sizes); None keeps it."""

    iou: float = 0.5
    ref_low: float = 1e-2
    ref_high: float = 1.0
    ref_points: int = 9
    min_height: float | None = None
    aspect_ratio: float | None = CALTECH_ASPECT_RATIO
    border: float | None = CALTECH_BORDER

    def __post_init__(self) -> None:
        if not 0 < self.iou <= 1:
            raise ConfigError(f"iou must be in (0, 1], got {self.iou}")
        if not 0 < self.ref_low <= self.ref_high or self.ref_points < 1:
            raise ConfigError("need 0 < ref_low <= ref_high and ref_points >= 1")
        if self.min_height is not None and self.min_height < 0:
            raise ConfigError(f"min_height must be >= 0, got {self.min_height}")
        if self.aspect_ratio is not None and not 0 < self.aspect_ratio < 100:
            raise ConfigError(f"aspect_ratio must be in (0, 100) or None, got {self.aspect_ratio}")
        if self.border is not None and not 0 <= self.border < 240:
            raise ConfigError(f"border must be in [0, 240) pixels or None, got {self.border}")

    @property
    def references(self) -> np.ndarray:
        """The FPPI values at which the log-average is taken."""
        return np.logspace(np.log10(self.ref_low), np.log10(self.ref_high), self.ref_points)


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(boxes, np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise InvalidInputError(f"{name} must be [N, 4] (x, y, w, h), got shape {array.shape}")
    return array


def standardize_aspect(boxes: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """``boxes [N, 4]`` (x, y, w, h) with width ``aspect_ratio * h`` about the same centre.

    Caltech's ``bbApply('resize', bb, 1, 0, aspect_ratio)``: height and centre kept.
    Returns a new float64 array.
    """
    out = _as_boxes(boxes, "boxes").copy()
    width = aspect_ratio * out[:, 3]
    out[:, 0] += (out[:, 2] - width) / 2
    out[:, 2] = width
    return out


def _number_or_none(text: str, flag: str) -> float | None:
    """``text`` as a number, or None for "none" (any case); ConfigError naming ``flag``."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number or 'none', got {text!r}") from None


def parse_aspect_ratio(text: str) -> float | None:
    """A command line's ``--aspect-ratio``: a positive number, or "none" (boxes as given)."""
    value = _number_or_none(text, "--aspect-ratio")
    if value is not None and not 0 < value < 100:
        raise ConfigError(f"--aspect-ratio must be in (0, 100), got {value}")
    return value


def parse_border(text: str) -> float | None:
    """A command line's ``--border``: pixels at 640x480 >= 0, or "none" (no border rule)."""
    value = _number_or_none(text, "--border")
    if value is not None and not 0 <= value < 240:
        raise ConfigError(f"--border must be in [0, 240) pixels, got {value}")
    return value


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--aspect-ratio`` and ``--border``: the protocol's box rules (:class:`EvalConfig`)."""
    parser.add_argument(
        "--aspect-ratio", type=parse_aspect_ratio, default=CALTECH_ASPECT_RATIO, metavar="R",
        help="match boxes standardised to width = R x height about their centres, as the "
        f"Caltech toolbox does (default {CALTECH_ASPECT_RATIO}); 'none': boxes as given "
        "(alscout's evaluation before 2026-12-03)",
    )  # fmt: skip
    parser.add_argument(
        "--border", type=parse_border, default=CALTECH_BORDER, metavar="PX",
        help="ground truth within PX pixels (at 640x480, scaled with the frame) of the "
        f"frame's edge is ignore, as the Caltech toolbox (default {CALTECH_BORDER:g}); "
        "'none': counted (alscout's evaluation before session 10, 2026-12-03)",
    )  # fmt: skip


def at_border(boxes: np.ndarray, width: float, height: float, border: float) -> np.ndarray:
    """Which of ``boxes [N, 4]`` (x, y, w, h) come within ``border`` of the frame's edge.

    ``border`` in pixels at 640x480, scaled to the ``width x height`` frame per axis;
    as ``bbGt('bbLoad')``'s ``xRng`` / ``yRng``, a box is out when ``x < bx``,
    ``x + w > width - bx``, ``y < by`` or ``y + h > height - by``. Returns ``[N]`` bool.
    """
    b = _as_boxes(boxes, "boxes")
    bx, by = border * width / _BORDER_FRAME[0], border * height / _BORDER_FRAME[1]
    return (
        (b[:, 0] < bx)
        | (b[:, 0] + b[:, 2] > width - bx)
        | (b[:, 1] < by)
        | (b[:, 1] + b[:, 3] > height - by)
    )


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    iou: float = 0.5,
    aspect_ratio: float | None = CALTECH_ASPECT_RATIO,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's detections to its ground truth.

    ``det_boxes [M, 4]``, ``det_scores [M]``, ``gt_boxes [G, 4]`` (x, y, w, h),
    ``gt_ignore [G]`` bool. With ``aspect_ratio`` set, detections and non-ignore
    ground truth are first standardised to it (:func:`standardize_aspect`, as
    ``dbEval``); None matches the boxes as given. Returns ``det_type [M]`` int8 (1 true
    positive, 0 false positive, -1 on an ignore region) and ``gt_matched [G]`` bool, in
    input order.
    """
    dets, gts = _as_boxes(det_boxes, "det_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    ignore = np.asarray(gt_ignore, bool).reshape(-1)
    if len(scores) != len(dets) or len(ignore) != len(gts):
        raise InvalidInputError("det_scores / gt_ignore lengths must match their boxes")
    if aspect_ratio is not None:
        dets = standardize_aspect(dets, aspect_ratio)
        gts = gts.copy()
        gts[~ignore] = standardize_aspect(gts[~ignore], aspect_ratio)
    det_type = np.zeros(len(dets), np.int8)
    matched = np.zeros(len(gts), bool)
    if not len(dets) or not len(gts):
        return det_type, matched
    overlap = iou_matrix(dets, gts)
    # ignore regions: intersection over the detection's area
    ix = np.minimum(dets[:, None, 0] + dets[:, None, 2], gts[None, :, 0] + gts[None, :, 2])
    ix -= np.maximum(dets[:, None, 0], gts[None, :, 0])
    iy = np.minimum(dets[:, None, 1] + dets[:, None, 3], gts[None, :, 1] + gts[None, :, 3])
    iy -= np.maximum(dets[:, None, 1], gts[None, :, 1])
    area = (dets[:, 2] * dets[:, 3])[:, None]
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    over_det = np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)
    overlap[:, ignore] = over_det[:, ignore]
    real = ~ignore
    for d in np.argsort(-scores, kind="stable"):
        free = real & ~matched & (overlap[d] >= iou)
        if free.any():
            g = int(np.flatnonzero(free)[np.argmax(overlap[d, free])])
            matched[g] = True
            det_type[d] = 1
            continue
        if (ignore & (overlap[d] >= iou)).any():
            det_type[d] = -1
    return det_type, matched


@dataclass
class EvalResult:
    """Miss rate against false positives per image, and its summaries.

    ``fppi``, ``miss_rate``, ``thresholds``: the curve, one point per distinct score
    (decreasing), starting with the infinite threshold (FPPI 0, miss rate 1; its
    threshold is written as None, JSON null).
    ``lamr``: log-average miss rate. ``mr_at_fppi1``: miss rate at FPPI = 1 (largest
    FPPI <= 1). ``reference_fppi`` / ``reference_mr``: the sampled points.
    """

    fppi: list[float]
    miss_rate: list[float]
    thresholds: list[float | None]
    lamr: float
    mr_at_fppi1: float
    reference_fppi: list[float]
    reference_mr: list[float]
    num_images: int
    num_gt: int
    num_ignore_gt: int
    num_detections: int
    num_ignored_detections: int
    config: dict = field(default_factory=dict)

    def to_json(self, path: Path | str | None = None) -> str:
        """The result as JSON text; also written to ``path`` when given."""
        text = json.dumps(asdict(self), indent=1)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text


def _sample(fppi: np.ndarray, mr: np.ndarray, refs: np.ndarray) -> np.ndarray:
    # fppi is non-decreasing; take the last point with fppi <= ref (index 0 is FPPI 0)
    idx = np.searchsorted(fppi, refs, side="right") - 1
    return mr[idx]


def evaluate(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    ground_truth: Sequence[tuple[np.ndarray, np.ndarray]],
    config: EvalConfig | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> EvalResult:
    """Evaluate per-image ``(boxes [M, 4], scores [M])`` against ``(boxes [G, 4], ignore [G])``.

    Both sequences are aligned image by image; pixels of the same image for both.
    Each image is matched by :func:`match_image` with ``config``'s ``iou`` and
    ``aspect_ratio``. ``image_sizes``: ``(width, height)`` per image, for ``config``'s
    ``border`` rule; without them no box counts as cut by the frame.
    """
    cfg = EvalConfig() if config is None else config
    if len(detections) != len(ground_truth):
        raise InvalidInputError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    if image_sizes is not None and len(image_sizes) != len(ground_truth):
        raise InvalidInputError(f"{len(image_sizes)} image sizes for {len(ground_truth)} images")
    all_scores, all_types = [], []
    num_gt = num_ignore = 0
    for i, ((det_boxes, det_scores), (gt_boxes, gt_ignore)) in enumerate(
        zip(detections, ground_truth, strict=True)
    ):
        dets, scores = (
            _as_boxes(det_boxes, "det_boxes"),
            np.asarray(det_scores, np.float64).reshape(-1),
        )
        gts, ignore = (
            _as_boxes(gt_boxes, "gt_boxes"),
            np.asarray(gt_ignore, bool).reshape(-1).copy(),
        )
        if cfg.border is not None and image_sizes is not None:
            ignore |= at_border(gts, *image_sizes[i], cfg.border)
        if cfg.min_height is not None:
            ignore |= gts[:, 3] < cfg.min_height
            tall = dets[:, 3] >= cfg.min_height / 1.25
            dets, scores = dets[tall], scores[tall]
        det_type, _ = match_image(dets, scores, gts, ignore, cfg.iou, cfg.aspect_ratio)
        num_gt += int((~ignore).sum())
        num_ignore += int(ignore.sum())
        all_scores.append(scores)
        all_types.append(det_type)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    types = np.concatenate(all_types) if all_types else np.zeros(0, np.int8)
    counted = types >= 0
    order = np.argsort(-scores[counted], kind="stable")
    s, t = scores[counted][order], types[counted][order]
    tp, fp = np.cumsum(t == 1), np.cumsum(t == 0)
    # one point per distinct threshold: the last detection of each run of equal scores
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.zeros(0, int)
    n_img = max(len(ground_truth), 1)
    fppi = np.concatenate([[0.0], fp[last] / n_img])
    recall = np.concatenate([[0.0], tp[last] / num_gt if num_gt else np.zeros(len(last))])
    miss = 1.0 - recall
    thresholds = np.concatenate([[np.inf], s[last]])
    refs = cfg.references
    ref_mr = _sample(fppi, miss, refs)
    lamr = float(np.exp(np.mean(np.log(np.maximum(ref_mr, _MR_FLOOR)))))
    mr1 = float(_sample(fppi, miss, np.array([1.0]))[0])
    return EvalResult(
        fppi=fppi.tolist(),
        miss_rate=miss.tolist(),
        thresholds=[float(v) if np.isfinite(v) else None for v in thresholds],
        lamr=lamr,
        mr_at_fppi1=mr1,
        reference_fppi=refs.tolist(),
        reference_mr=ref_mr.tolist(),
        num_images=len(ground_truth),
        num_gt=num_gt,
        num_ignore_gt=num_ignore,
        num_detections=int(counted.sum()),
        num_ignored_detections=int((~counted).sum()),
        config=asdict(cfg),
    )


def evaluate_records(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    records: Sequence[ImageRecord],
    config: EvalConfig | None = None,
) -> EvalResult:
    """:func:`evaluate` against the boxes of :class:`ImageRecord` s (ignore flags kept).

    The records' sizes are the frames' for ``config``'s ``border`` rule.
    """
    truth = [record_truth(r) for r in records]
    return evaluate(detections, truth, config, [(r.width, r.height) for r in records])


def record_truth(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    """One record's ground truth as :func:`evaluate` takes it: ``boxes [G, 4]``
    (x, y, w, h) float64 and ``ignore [G]`` bool, the boxes' own flags (the frame-edge
    rule is :func:`evaluate`'s)."""
    boxes = np.array([[b.x, b.y, b.w, b.h] for b in record.boxes], np.float64).reshape(-1, 4)
    return boxes, np.array([b.ignore for b in record.boxes], bool)
