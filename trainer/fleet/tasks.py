"""Labeling round trips: export the pool's frames as tasks, import finished labels.

Export writes three files into one folder, for whichever tool the labelers use:

- ``tasks_coco.json``: COCO with the images to label and no annotations; each
  image's ``id`` is its pool item id and ``file_name`` its path under the pool
  folder (``images/<recording>/<camera>/<frame>.<ext>``): give the tool the pool
  folder as the image root.
- ``images.txt``: the images' absolute paths, one per line, in the same order.
- ``tasks_label_studio.json``: Label Studio tasks ``[{"id", "data": {"image", ...}}]``;
  ``image`` is ``url_prefix + file_name`` (default: Label Studio's local-files URL,
  with ``LOCAL_FILES_DOCUMENT_ROOT`` set to the pool folder).

With ``predictions`` (:func:`~alscout.trainer.fleet.preannotate.predict_boxes`: the
current model's detections) the tasks carry them as pre-annotations, marked as the
model's: Label Studio ``predictions`` (:mod:`~alscout.trainer.fleet.label_studio`),
and COCO annotations with a ``score`` and ``"prediction": 1`` (``info.pre_annotations``
names the model).

Import reads either the tool's COCO export (:func:`read_coco`) or Label Studio's JSON
export (:func:`~alscout.trainer.fleet.label_studio.read_export`). A COCO image is
matched to a pool item by its ``file_name``'s trailing path (tools keep or strip
folders), the ``id`` breaking ties; an image listed without annotations is a frame
labeled as holding no pedestrian. A COCO file still holding the model's predictions
(``"prediction": 1``) is refused: predictions are not labels. The whole file is
checked before anything is written: a malformed file, an unknown image or a size
mismatch raises :class:`DataError` naming the file, and the pool is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import read_coco, write_coco
from alscout.trainer.fleet.label_studio import is_label_studio_export, read_export, task_of
from alscout.trainer.fleet.pool import LabelPool, PoolItem, now_iso
from alscout.trainer.fleet.preannotate import Predictions

__all__ = [
    "LABEL_STUDIO_URL_PREFIX",
    "TaskExport",
    "LabelImport",
    "export_tasks",
    "import_labels",
    "match_items",
]

log = logging.getLogger(__name__)

#: Label Studio serves local files under this URL when local file serving is on.
LABEL_STUDIO_URL_PREFIX = "/data/local-files/?d="


@dataclass(frozen=True)
class TaskExport:
    """The files one export wrote, how many images they list and how many predicted
    boxes they carry (0 without pre-annotations)."""

    coco: Path
    image_list: Path
    label_studio: Path
    count: int
    predicted_boxes: int = 0


@dataclass(frozen=True)
class LabelImport:
    """What one import changed: images labeled (``relabeled`` of them had labels)."""

    source: Path
    images: int
    boxes: int
    relabeled: int


def export_tasks(
    pool: LabelPool,
    out_dir: str | Path,
    *,
    items: Sequence[PoolItem] | None = None,
    url_prefix: str = LABEL_STUDIO_URL_PREFIX,
    predictions: Predictions | None = None,
) -> TaskExport:
    """Write labeling tasks for ``items`` (default: every unlabeled pool item), with
    ``predictions`` as pre-annotations when given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(pool.unlabeled() if items is None else items)
    predicted = predictions.boxes if predictions is not None else {}
    records = [
        ImageRecord(
            image_id=item.item_id,
            source=pool.image_path(item),
            width=item.width,
            height=item.height,
            boxes=tuple(p.box for p in predicted.get(item.item_id, ())),
            sequence=f"{item.recording_id}/{item.camera_id}",
        )
        for item in chosen
    ]
    coco = write_coco(Dataset(records, name="alscout-tasks"), out / "tasks_coco.json", pool.root)
    if predictions is not None:
        _mark_predictions(coco, chosen, predictions)
    image_list = out / "images.txt"
    image_list.write_text(
        "".join(f"{pool.image_path(item).resolve()}\n" for item in chosen), encoding="utf-8"
    )
    tasks = [task_of(item, url_prefix, predictions) for item in chosen]
    label_studio = out / "tasks_label_studio.json"
    label_studio.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    boxes = sum(len(r.boxes) for r in records)
    log.info("exported labeling tasks out=%s images=%d predicted_boxes=%d", out, len(chosen), boxes)
    return TaskExport(coco, image_list, label_studio, len(chosen), boxes)


def _mark_predictions(coco: Path, items: Sequence[PoolItem], predictions: Predictions) -> None:
    """Give each COCO annotation write_coco wrote (one per predicted box, in item order)
    its score and the mark ``"prediction": 1``; name the model in ``info``."""
    document = json.loads(coco.read_text(encoding="utf-8"))
    scores = [p.score for item in items for p in predictions.boxes.get(item.item_id, ())]
    annotations = document["annotations"]
    assert len(annotations) == len(scores)  # write_coco writes records and boxes in order
    for annotation, score in zip(annotations, scores, strict=True):
        annotation["score"] = score
        annotation["prediction"] = 1
    document["info"]["pre_annotations"] = {
        "model_version": predictions.model_version,
        "model_hash": predictions.model_hash,
        "threshold": predictions.threshold,
        "note": "annotations are the model's predictions, to be corrected, not labels",
    }
    coco.write_text(json.dumps(document, indent=1), encoding="utf-8")


def match_items(pool: LabelPool, records: Sequence[ImageRecord], source: Path) -> list[PoolItem]:
    """The pool item of each record, by trailing path of its file name (ids break ties)."""
    by_tail: dict[str, list[PoolItem]] = {}
    for item in pool.items:
        parts = PurePosixPath(item.file).parts
        for depth in range(1, min(len(parts), 4) + 1):
            by_tail.setdefault("/".join(parts[-depth:]), []).append(item)
    matched = []
    for record in records:
        parts = PurePosixPath(Path(record.source).as_posix()).parts
        found: list[PoolItem] = []
        for depth in range(min(len(parts), 4), 0, -1):
            found = by_tail.get("/".join(parts[-depth:]), [])
            if found:
                break
        if len(found) > 1:
            by_id = [item for item in found if item.item_id == record.image_id]
            if len(by_id) != 1:
                raise DataError(
                    f"{source}: image {record.image_id} ({Path(record.source).name}) matches "
                    f"several pool images and its id picks none; keep the folders in file_name"
                )
            found = by_id
        if not found:
            raise DataError(
                f"{source}: image {record.image_id} ({Path(record.source).name}) is not in the pool"
            )
        item = found[0]
        if (record.width, record.height) != (item.width, item.height):
            raise DataError(
                f"{source}: image {record.image_id} is {record.width}x{record.height}, the "
                f"pool's {item.file} is {item.width}x{item.height}"
            )
        matched.append(item)
    return matched


def import_labels(pool: LabelPool, labels_file: str | Path) -> LabelImport:
    """Apply a labels file (COCO, or Label Studio's JSON export) to the pool, all or
    nothing; returns what changed."""
    source = Path(labels_file)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{source}: cannot read the labels file: {error}") from None
    if not text.strip():
        raise DataError(f"{source}: the labels file is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: not valid JSON ({error})") from None
    if is_label_studio_export(document):
        labeled = read_export(pool, document, source)
        if not labeled:
            raise DataError(f"{source}: no task has a finished annotation; nothing to import")
        boxes_of: dict[int, tuple[Box, ...]] = {}
        for item, boxes in labeled:
            if item.item_id in boxes_of:
                raise DataError(f"{source}: two tasks label {item.file}")
            boxes_of[item.item_id] = boxes
        return _apply(pool, source, boxes_of)
    if not isinstance(document, dict) or "images" not in document:
        raise DataError(
            f"{source}: not a COCO file (no 'images' list) nor a Label Studio JSON export "
            "(a list of tasks)"
        )
    _refuse_predictions(document, source)
    try:
        data = read_coco(source, check_files=False)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise DataError(f"{source}: malformed COCO labels ({error!r})") from None
    if not len(data):
        raise DataError(f"{source}: lists no images; nothing to import")
    items = match_items(pool, data.images, source)
    seen: dict[int, int] = {}
    for record, item in zip(data.images, items, strict=True):
        if item.item_id in seen:
            raise DataError(
                f"{source}: images {seen[item.item_id]} and {record.image_id} are both {item.file}"
            )
        seen[item.item_id] = record.image_id
    # read_coco keeps pedestrians and ignore regions only; other categories are dropped
    boxes_of = {item.item_id: record.boxes for record, item in zip(data, items, strict=True)}
    return _apply(pool, source, boxes_of)


def _refuse_predictions(document: dict[str, object], source: Path) -> None:
    """A COCO file whose annotations are still the model's predictions is not labels."""
    annotations = document.get("annotations")
    for annotation in annotations if isinstance(annotations, list) else []:
        if isinstance(annotation, dict) and annotation.get("prediction"):
            raise DataError(
                f"{source}: annotation {annotation.get('id', '?')} is a model prediction "
                "(the pre-annotations of export-tasks), not a label; import the labeling "
                "tool's export of the corrected boxes"
            )


def _apply(pool: LabelPool, source: Path, boxes_of: dict[int, tuple[Box, ...]]) -> LabelImport:
    """Write the labels of ``boxes_of`` (item id -> boxes) into the pool, in one edit."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    relabeled = 0
    with pool.edit() as state:
        for position, item in enumerate(state.items):
            if item.item_id in boxes_of:
                relabeled += item.labeled
                state.items[position] = LabelPool.with_labels(
                    item, boxes_of[item.item_id], source.name
                )
        state.label_imports.append(
            {
                "file": str(source),
                "sha256": digest,
                "images": len(boxes_of),
                "boxes": sum(len(b) for b in boxes_of.values()),
                "when": now_iso(),
            }
        )
    result = LabelImport(
        source=source,
        images=len(boxes_of),
        boxes=sum(len(b) for b in boxes_of.values()),
        relabeled=relabeled,
    )
    log.info(
        "labels imported file=%s images=%d boxes=%d relabeled=%d",
        source,
        result.images,
        result.boxes,
        result.relabeled,
    )
    return result
