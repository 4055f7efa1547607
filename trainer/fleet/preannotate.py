"""Pre-annotations: the current model's detections on pool frames, for labelers to correct.

:func:`predict_boxes` runs an ONNX model (the registry's newest version, or any file
exported by ``alscout export``) through the runtime's scoring pipeline (the vehicle's
resizing and normalisation, mirrored double evaluation) and decodes each frame's head
maps into boxes (:func:`~alscout.trainer.evaluation.detections.decode_detections`:
local maxima above ``threshold``, on their sub-pixel centres when the model gives its
heads' strides, default boxes, NMS), in the pool image's pixels.
The task export writes them as *predictions*, never as labels: Label Studio
``predictions`` and COCO annotations with a ``score`` and ``"prediction": 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alscout.errors import InvalidInputError
from alscout.trainer.data.annotations import Box
from alscout.trainer.fleet.pool import LabelPool, PoolItem

__all__ = ["ScoredBox", "Predictions", "predict_boxes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredBox:
    """A detected pedestrian in image pixels and the model's confidence in [0, 1]."""

    box: Box
    score: float


@dataclass(frozen=True)
class Predictions:
    """The boxes of a model per pool item id, and which model said so."""

    model_version: str
    model_hash: str
    threshold: float
    boxes: dict[int, tuple[ScoredBox, ...]]


def predict_boxes(
    pool: LabelPool,
    items: Sequence[PoolItem],
    model: str | Path,
    *,
    threshold: float = 0.5,
    nms_iou: float = 0.5,
    backend: str = "auto",
    threads: int = 0,
) -> Predictions:
    """Detections of ``model`` on each of ``items`` (see the module)."""
    from alscout.runtime.backends.registry import open_backend
    from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
    from alscout.trainer.data.images import read_still
    from alscout.trainer.evaluation.detections import REFERENCE_SIZE, decode_detections

    if not 0.0 < threshold < 1.0:
        raise InvalidInputError(f"the prediction threshold must be in (0, 1), got {threshold}")
    with ScoringPipeline(
        open_backend(Path(model), backend, threads=threads), PipelineConfig(batch_size=1)
    ) as pipeline:
        info = pipeline.model_info
        in_h, in_w = pipeline.input_size
        ref_w, ref_h = REFERENCE_SIZE
        boxes_ref = [(h * ref_h / in_h, w * ref_w / in_w) for h, w in info.default_boxes]
        found: dict[int, tuple[ScoredBox, ...]] = {}
        for item in items:
            image = read_still(pool.image_path(item))
            # a model with the scores in its graph needs --keep-probs (else ModelError)
            (maps,) = pipeline.probabilities([image])
            boxes, scores = decode_detections(
                maps, boxes_ref, threshold, nms_iou, strides=info.head_strides
            )
            sx, sy = item.width / in_w, item.height / in_h
            found[item.item_id] = tuple(
                ScoredBox(
                    Box(float(x) * sx, float(y) * sy, float(w) * sx, float(h) * sy),
                    float(score),
                )
                for (x, y, w, h), score in zip(boxes.tolist(), scores.tolist(), strict=True)
            )
    total = sum(len(b) for b in found.values())
    log.info(
        "pre-annotated model=%s version=%s images=%d boxes=%d",
        model,
        info.version,
        len(found),
        total,
    )
    return Predictions(info.version, info.sha256, threshold, found)
