"""Label Studio's JSON formats: tasks out (with the model's predictions), labels back in.

Tasks (``tasks_label_studio.json``) are ``[{"id", "data": {"image", "alscout_item",
...}, "predictions": [...]}]``. A prediction is one ``rectanglelabels`` result per box,
``value`` in percent of the image (``x``, ``y``, ``width``, ``height``, Label Studio's
convention) with ``original_width`` / ``original_height``, ``from_name`` "label" and
``to_name`` "image", as the labeling config in docs/fleet.md names them.

Import (:func:`read_export`) reads Label Studio's "JSON" export: the same tasks with
the labelers' ``annotations``. Each task's last annotation not cancelled is its
label; a task nobody annotated is left unlabeled; an annotation with no box labels
the frame as holding no pedestrian. Labels "person" become boxes, the ignore labels of
COCO import ("ignore", "people", ...) ignore regions; other labels are dropped.
A task is matched to its pool item by ``data.alscout_item`` (kept by Label Studio
from the export), else by its image's path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box, clip_to_image
from alscout.trainer.data.coco import DEFAULT_IGNORE_LABELS
from alscout.trainer.fleet.pool import LabelPool, PoolItem
from alscout.trainer.fleet.preannotate import Predictions

__all__ = ["FROM_NAME", "TO_NAME", "task_of", "read_export", "is_label_studio_export"]

log = logging.getLogger(__name__)

#: the names the labeling config gives its RectangleLabels and Image tags
FROM_NAME, TO_NAME = "label", "image"
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploaded files so


def task_of(item: PoolItem, url_prefix: str, predictions: Predictions | None) -> dict[str, Any]:
    """The Label Studio task of a pool item, with the model's boxes as a prediction."""
    task: dict[str, Any] = {
        "id": item.item_id,
        "data": {
            "image": f"{url_prefix}{item.file}",
            "alscout_item": item.item_id,
            "recording_id": item.recording_id,
            "camera_id": item.camera_id,
            "frame_index": item.frame_index,
            "vehicle": item.vehicle,
        },
    }
    if predictions is not None:
        boxes = predictions.boxes.get(item.item_id, ())
        task["predictions"] = [
            {
                "model_version": predictions.model_version,
                "score": max((b.score for b in boxes), default=0.0),
                "result": [
                    {
                        "id": f"p{item.item_id}-{n}",
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "rectanglelabels",
                        "original_width": item.width,
                        "original_height": item.height,
                        "image_rotation": 0,
                        "score": scored.score,
                        "value": {
                            "x": 100.0 * scored.box.x / item.width,
                            "y": 100.0 * scored.box.y / item.height,
                            "width": 100.0 * scored.box.w / item.width,
                            "height": 100.0 * scored.box.h / item.height,
                            "rotation": 0,
                            "rectanglelabels": [scored.box.label],
                        },
                    }
                    for n, scored in enumerate(boxes)
                ],
            }
        ]
    return task


def is_label_studio_export(data: Any) -> bool:
    """Whether parsed JSON looks like Label Studio's JSON export (a list of tasks)."""
    return isinstance(data, list) and all(isinstance(t, dict) and "data" in t for t in data)


def read_export(
    pool: LabelPool, tasks: Sequence[dict[str, Any]], source: Path
) -> list[tuple[PoolItem, tuple[Box, ...]]]:
    """(pool item, boxes) of every annotated task; :class:`DataError` naming ``source``."""
    by_id = {item.item_id: item for item in pool.items}
    by_tail: dict[str, list[PoolItem]] = {}
    for item in pool.items:
        by_tail.setdefault(PurePosixPath(item.file).name, []).append(item)
    labeled = []
    skipped = 0
    for position, task in enumerate(tasks):
        where = f"{source}: task {task.get('id', position)}"
        annotation = _last_annotation(task, where)
        if annotation is None:
            skipped += 1
            continue
        item = _item_of(task, by_id, by_tail, where)
        boxes = []
        for result in annotation.get("result") or []:
            box = _box(result, item, where)
            if box is not None:
                boxes.append(box)
        labeled.append((item, tuple(boxes)))
    if skipped:
        log.info("label studio export path=%s tasks_without_annotation=%d", source, skipped)
    return labeled


def _last_annotation(task: dict[str, Any], where: str) -> dict[str, Any] | None:
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{where}: 'annotations' must be a list")
    finished = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled", False)]
    if not finished:
        return None
    return max(enumerate(finished), key=lambda p: (str(p[1].get("updated_at", "")), p[0]))[1]


def _item_of(
    task: dict[str, Any],
    by_id: dict[int, PoolItem],
    by_tail: dict[str, list[PoolItem]],
    where: str,
) -> PoolItem:
    data = task.get("data")
    if not isinstance(data, dict):
        raise DataError(f"{where}: 'data' must be an object")
    item_id = data.get("alscout_item")
    if item_id is not None:
        if isinstance(item_id, bool) or not isinstance(item_id, int) or item_id not in by_id:
            raise DataError(f"{where}: data.alscout_item {item_id!r} is not in the pool")
        return by_id[item_id]
    image = data.get("image")
    if not isinstance(image, str):
        raise DataError(f"{where}: no data.alscout_item and no data.image to match")
    parsed = urlparse(image)
    path = parse_qs(parsed.query).get("d", [unquote(parsed.path)])[-1]
    name = _UPLOAD_PREFIX.sub("", PurePosixPath(path).name)
    found = by_tail.get(name, [])
    if len(found) > 1:
        tails = [i for i in found if path.endswith(i.file)]
        found = tails if len(tails) == 1 else found
    if len(found) != 1:
        what = "is not in the pool" if not found else "matches several pool images"
        raise DataError(f"{where}: image {image!r} {what}")
    return found[0]


def _box(result: Any, item: PoolItem, where: str) -> Box | None:
    """A result's box in the item's pixels, or None for a result that is not a box."""
    if not isinstance(result, dict) or result.get("type") != "rectanglelabels":
        return None
    value: Any = result.get("value")
    try:
        labels = value["rectanglelabels"]
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        rotation = float(value.get("rotation", 0) or 0)
        width = int(result.get("original_width") or item.width)
        height = int(result.get("original_height") or item.height)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{where}: malformed rectangle ({error!r})") from None
    if (width, height) != (item.width, item.height):
        raise DataError(
            f"{where}: image is {width}x{height}, the pool's {item.file} is "
            f"{item.width}x{item.height}"
        )
    if rotation % 360:
        raise DataError(f"{where}: rotated rectangles ({rotation} degrees) are not supported")
    label = labels[0] if isinstance(labels, list) and labels else ""
    if label != "person" and label not in DEFAULT_IGNORE_LABELS:
        return None
    box = Box(
        x * width / 100.0,
        y * height / 100.0,
        w * width / 100.0,
        h * height / 100.0,
        label=label,
        ignore=label != "person",
    )
    return clip_to_image(box, width, height, where)
