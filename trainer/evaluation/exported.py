"""Detection quality of an exported model, run by a runtime backend (ONNX Runtime, ...).

:func:`evaluate_backend` is ``alscout evaluate``'s Caltech evaluation
(:func:`alscout.trainer.training.evaluate`) with the network replaced by a model file:
the same paper filters, the same resizing (the trainer's), double evaluation as one
batch of frames and mirrors, the same decoding. :func:`int8_quality` runs it on an
INT8 model and its float32 source to tell whether quantisation cost detection quality
(MR@FPPI=1, SPEC §3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from alscout.export.quantize import QUALITY_POINTS, Int8Quality
from alscout.runtime.backends.base import Backend
from alscout.runtime.scoring import merge_mirrored
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.data.augment import resize_to
from alscout.trainer.data.filters import BoxFilter, filter_dataset
from alscout.trainer.data.images import load_image
from alscout.trainer.evaluation.caltech import EvalResult, evaluate_records
from alscout.trainer.evaluation.detections import decode_detections

__all__ = ["evaluate_backend", "detect_backend", "int8_quality"]

log = logging.getLogger(__name__)

#: (height, width) the default boxes and the paper's 50 px filter refer to
REFERENCE_SIZE = (480, 640)


def detect_backend(
    backend: Backend,
    images: Sequence[np.ndarray],
    threshold: float = 0.05,
    nms_iou: float = 0.5,
    mirror: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes in RGB uint8 ``[H, W, 3]`` images of one size, by an active ``backend``.

    Images are resized to the model's input size, run (with their mirrors in the same
    batch when ``mirror``), decoded as :func:`alscout.trainer.model.detect` does, and
    scaled back. Returns per image ``(boxes [M, 4] float32 (x, y, w, h), scores [M])``.
    """
    if not len(images):
        return []
    info = backend.model_info
    in_h, in_w = info.input_size
    height, width = images[0].shape[:2]
    batch = np.stack([resize_to(image, (), in_w, in_h)[0] for image in images])
    inputs = info.normalisation.apply(batch)
    n = len(images)
    if mirror:
        probs = backend.infer(np.concatenate([inputs, inputs[..., ::-1]]))
        probs = merge_mirrored(probs[:n], probs[n:])
    else:
        probs = backend.infer(inputs)
    ref_h, ref_w = REFERENCE_SIZE
    boxes_ref = [(h * ref_h / in_h, w * ref_w / in_w) for h, w in info.default_boxes]
    scale = np.array([width / in_w, height / in_h, width / in_w, height / in_h], np.float32)
    out = []
    for maps in probs:
        boxes, scores = decode_detections(
            maps, boxes_ref, threshold, nms_iou, strides=info.head_strides
        )
        out.append((boxes * scale, scores))
    return out


def evaluate_backend(
    backend: Backend,
    dataset: Dataset,
    *,
    threshold: float = 0.05,
    nms_iou: float = 0.5,
    mirror: bool = True,
    paper_filters: bool = True,
    batch_size: int = 8,
) -> EvalResult:
    """The Caltech evaluation (LAMR, MR@FPPI=1) of an active ``backend`` on ``dataset``.

    As ``alscout evaluate --mirror`` on the checkpoint the model was exported from,
    with the model's input size as the network's.
    """
    if paper_filters:
        height, width = backend.model_info.input_size
        dataset = filter_dataset(dataset, BoxFilter.at_input(height, width, REFERENCE_SIZE[0]))
    detections: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[np.ndarray] = []
    for record in dataset:
        image = load_image(record)
        if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
            detections.extend(detect_backend(backend, pending, threshold, nms_iou, mirror))
            pending = []
        pending.append(image)
    if pending:
        detections.extend(detect_backend(backend, pending, threshold, nms_iou, mirror))
    return evaluate_records(detections, dataset.images)


def int8_quality(
    float_backend: Backend,
    int8_backend: Backend,
    dataset: Dataset,
    *,
    allowed_points: float = QUALITY_POINTS,
) -> Int8Quality:
    """MR@FPPI=1 of both (active) backends on ``dataset``, with double evaluation."""
    results = {}
    for name, backend in (("float32", float_backend), ("int8", int8_backend)):
        results[name] = evaluate_backend(backend, dataset)
        log.info(
            "detection quality model=%s dataset=%s mr_at_fppi1=%.4f lamr=%.4f",
            name,
            dataset.name,
            results[name].mr_at_fppi1,
            results[name].lamr,
        )
    return Int8Quality(
        dataset=dataset.name,
        images=results["float32"].num_images,
        mr_float=results["float32"].mr_at_fppi1,
        mr_int8=results["int8"].mr_at_fppi1,
        allowed_points=allowed_points,
    )
