"""Detections on disk: the COCO results format, one JSON list for a whole dataset.

``[{"image_id": 3, "category_id": 1, "bbox": [x, y, w, h], "score": 0.93}, ...]`` as
written by COCO-style evaluators; boxes in pixels of the stored image. Images with no
entry have no detection.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alscout.errors import DataError, InvalidInputError

__all__ = ["read_coco_results", "write_coco_results"]


def write_coco_results(
    image_ids: Sequence[int],
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    path: Path | str,
    category_id: int = 1,
) -> Path:
    """Write per-image ``(boxes [M, 4] (x, y, w, h), scores [M])`` as a COCO results list."""
    if len(image_ids) != len(detections):
        raise InvalidInputError(f"{len(image_ids)} image ids for {len(detections)} detection lists")
    entries = []
    for image_id, (boxes, scores) in zip(image_ids, detections, strict=True):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        for box, score in zip(boxes, np.asarray(scores, np.float64).reshape(-1), strict=True):
            entries.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_id,
                    "bbox": [round(float(v), 3) for v in box],
                    "score": round(float(score), 6),
                }
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def read_coco_results(
    path: Path | str, image_ids: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-image ``(boxes [M, 4] float64, scores [M] float64)`` in the order of ``image_ids``.

    Raises :class:`DataError` naming the file when it is missing, empty, malformed or
    refers to an image id not in ``image_ids``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: detections file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path}: detections file is empty")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of detections")
    index = {int(i): n for n, i in enumerate(image_ids)}
    boxes: list[list[list[float]]] = [[] for _ in image_ids]
    scores: list[list[float]] = [[] for _ in image_ids]
    for n, entry in enumerate(entries):
        try:
            image_id, bbox, score = int(entry["image_id"]), entry["bbox"], float(entry["score"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: entry {n} needs image_id, bbox and score") from None
        if image_id not in index:
            raise DataError(f"{path}: entry {n} refers to unknown image {image_id}")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{path}: entry {n} bbox must be [x, y, w, h]")
        boxes[index[image_id]].append([float(v) for v in bbox])
        scores[index[image_id]].append(score)
    return [
        (np.array(b, np.float64).reshape(-1, 4), np.array(s, np.float64))
        for b, s in zip(boxes, scores, strict=True)
    ]
