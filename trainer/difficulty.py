"""The learned difficulty head's target and loss (DEAL; docs/detector.md, "Difficulty head").

DEAL (Difficulty-awarE Active Learning, SPEC §5) learns an error mask: where a
segmentation network's prediction is wrong. For a detector an error is what the
evaluation counts (SPEC §3, the Caltech protocol), drawn as pixels:

- the head probabilities of the training forward pass (detached) are decoded exactly as
  the evaluation decodes them (:func:`alscout.runtime.detections.decode_detections`:
  local maxima above :data:`ERROR_THRESHOLD`, the head's default box, NMS at
  :data:`NMS_IOU`), at the threshold ``alscout al`` counts a frame's errors at;
- the detections are matched to the ground truth at IoU :data:`MATCH_IOU`, boxes
  standardised to aspect 0.41 as the evaluation does
  (:func:`~alscout.trainer.evaluation.caltech.match_image`); ground truth the paper's
  filters reject (under 50 px at 480 rows, width/height outside [0.2, 0.65], measured
  at the training input) or marked ignore is an ignore region, as in evaluation;
- the **error mask** is 1 at every pixel inside a false detection (FP) or inside a
  missed, non-ignore ground-truth box (FN), 0 elsewhere. A detection on an ignore region
  and an unmatched ignore box are no errors. "Inside" means the pixel's centre lies in
  the box.

The loss is the logistic loss of the difficulty logits against the mask over every
pixel, **balanced**: the mean over error pixels and the mean over the other pixels
weigh one half each (errors cover a few per cent of a frame, so an unweighted loss
would learn "never difficult"). A batch without any error pixel gives the second half
only. Counts are taken over the global batch, as the detection loss's are.

:class:`DifficultyTrainingSet` is :class:`~alscout.trainer.targets.TrainingSet` whose
items also carry the augmented ground truth (``truth``), padded to a fixed number of
rows so that the default collation stacks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from alscout.errors import InvalidInputError
from alscout.runtime.detections import decode_detections
from alscout.trainer.data.annotations import Box, Dataset
from alscout.trainer.data.filters import BoxFilter
from alscout.trainer.evaluation.caltech import match_image
from alscout.trainer.model import DetectorConfig
from alscout.trainer.targets import TrainingSet

if TYPE_CHECKING:
    from alscout.trainer.config import TrainConfig

__all__ = [
    "ERROR_THRESHOLD",
    "MATCH_IOU",
    "NMS_IOU",
    "truth_rows",
    "paint_boxes",
    "error_mask",
    "error_masks",
    "balanced_difficulty_loss",
    "DifficultyTrainingSet",
]

#: A detection counts from this probability on: ``alscout al``'s error threshold
#: (``[evaluation] error_threshold``), where a frame's false positives and negatives
#: are counted.
ERROR_THRESHOLD = 0.5
#: Detection / ground-truth match threshold (the Caltech protocol's).
MATCH_IOU = 0.5
#: NMS threshold of the decoder (the evaluation's default).
NMS_IOU = 0.5
#: columns of a :func:`truth_rows` row
_X, _Y, _W, _H, _IGNORE = range(5)


def truth_rows(
    boxes: Sequence[Box], height: int, width: int, detector: DetectorConfig, capacity: int
) -> np.ndarray:
    """Ground truth of one training input as ``[capacity, 5]`` float32 rows.

    Each row is ``(x, y, w, h, ignore)`` in pixels of the ``height x width`` input;
    ``ignore`` is 1 for boxes marked ignore and for those the paper's filters reject at
    this size (as the evaluation filters them), else 0. Rows past ``len(boxes)`` are NaN.
    """
    if len(boxes) > capacity:
        raise InvalidInputError(f"{len(boxes)} boxes do not fit {capacity} rows")
    rule = BoxFilter(min_height=BoxFilter().min_height * height / detector.reference_size[0])
    rows = np.full((capacity, 5), np.nan, np.float32)
    for i, box in enumerate(boxes):
        rows[i] = (box.x, box.y, box.w, box.h, 0.0 if rule.keeps(box) else 1.0)
    return rows


def paint_boxes(mask: np.ndarray, boxes: np.ndarray) -> None:
    """Set the pixels of ``mask [H, W]`` whose centres lie inside any of ``boxes [M, 4]``
    (x, y, w, h) to True: column ``j`` is inside when ``x <= j + 0.5 < x + w``."""
    height, width = mask.shape
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
        x0, x1 = max(int(np.ceil(x - 0.5)), 0), min(int(np.ceil(x + w - 0.5)), width)
        y0, y1 = max(int(np.ceil(y - 0.5)), 0), min(int(np.ceil(y + h - 0.5)), height)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True


def error_mask(
    probs: np.ndarray,
    truth: np.ndarray,
    ignore: np.ndarray,
    default_boxes: Sequence[tuple[float, float]],
    threshold: float = ERROR_THRESHOLD,
    iou: float = MATCH_IOU,
    nms_iou: float = NMS_IOU,
) -> np.ndarray:
    """Where the detector errs on one image: ``[H, W]`` bool (module docstring).

    ``probs``: ``[K, H, W]`` head probabilities; ``truth``: ``[M, 4]`` (x, y, w, h)
    in the same pixels; ``ignore``: ``[M]`` bool; ``default_boxes``: K (height, width)
    at 640x480, as :func:`~alscout.runtime.detections.decode_detections` takes them.
    """
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 3:
        raise InvalidInputError(f"probs must be [K, H, W], got shape {probs.shape}")
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    ignore = np.asarray(ignore, bool).reshape(-1)
    if len(ignore) != len(truth):
        raise InvalidInputError(f"{len(truth)} boxes but {len(ignore)} ignore flags")
    boxes, scores = decode_detections(probs, default_boxes, threshold, nms_iou)
    det_type, matched = match_image(boxes, scores, truth, ignore, iou)
    mask = np.zeros(probs.shape[1:], bool)
    paint_boxes(mask, boxes[det_type == 0])  # false positives
    paint_boxes(mask, truth[~ignore & ~matched])  # false negatives
    return mask


def error_masks(probs: np.ndarray, truth: np.ndarray, detector: DetectorConfig) -> np.ndarray:
    """:func:`error_mask` of a batch: ``probs [N, K, H, W]``, ``truth [N, M, 5]``
    (:func:`truth_rows`, NaN rows skipped) -> ``[N, 1, H, W]`` bool."""
    if probs.ndim != 4 or truth.ndim != 3 or truth.shape[0] != probs.shape[0]:
        raise InvalidInputError(
            f"need probs [N, K, H, W] and truth [N, M, 5], got {probs.shape} and {truth.shape}"
        )
    boxes_640 = [(float(h), float(w)) for h, w in detector.boxes_at(480, 640)]
    out = np.zeros((probs.shape[0], 1, *probs.shape[2:]), bool)
    for i, (maps, rows) in enumerate(zip(probs, truth, strict=True)):
        rows = rows[~np.isnan(rows[:, _X])]
        out[i, 0] = error_mask(maps, rows[:, :4], rows[:, _IGNORE] > 0.5, boxes_640)
    return out


def balanced_difficulty_loss(
    logits: torch.Tensor, errors: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Balanced logistic loss of the difficulty head (module docstring).

    ``logits``: ``[N, 1, H, W]``; ``errors``: ``[N, 1, H, W]`` bool error masks;
    ``counts``: ``[2]``, the error pixels and the other pixels of the *global* batch.
    Returns ``0.5 * (sum over errors / counts[0] + sum over the rest / counts[1])``,
    a term whose count is 0 contributing 0.
    """
    target = errors.to(torch.float32)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    positive = (per_pixel * target).sum() / counts[0].clamp(min=1)
    negative = (per_pixel * (1.0 - target)).sum() / counts[1].clamp(min=1)
    return 0.5 * (positive + negative)


class DifficultyTrainingSet(TrainingSet):
    """:class:`~alscout.trainer.targets.TrainingSet` whose items also hold ``truth``:
    ``[capacity, 5]`` float32 rows of the augmented ground truth (:func:`truth_rows`),
    ``capacity`` being the most boxes any record has (augmentation never adds boxes).

    Everything else equals the parent's items, draw for draw (a test holds them equal).
    """

    def __init__(
        self, dataset: Dataset, detector: DetectorConfig, config: TrainConfig, augment: bool = True
    ) -> None:
        super().__init__(dataset, detector, config, augment)
        self.capacity = max([1, *(len(record.boxes) for record in dataset)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, boxes, rng = self.augmented(index)
        item = self.item(image, boxes, rng, index)
        height, width = self.config.input_size
        item["truth"] = torch.from_numpy(
            truth_rows(boxes, height, width, self.detector, self.capacity)
        )
        return item
