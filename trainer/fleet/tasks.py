"""Labeling round trips: export the pool's frames as tasks, import finished labels (COCO).

Export writes three files into one folder, for whichever tool the labelers use:

- ``tasks_coco.json``: COCO with the images to label and no annotations; each
  image's ``id`` is its pool item id and ``file_name`` its path under the pool
  folder (``images/<recording>/<camera>/<frame>.<ext>``): give the tool the pool
  folder as the image root.
- ``images.txt``: the images' absolute paths, one per line, in the same order.
- ``tasks_label_studio.json``: Label Studio tasks ``[{"id", "data": {"image", ...}}]``;
  ``image`` is ``url_prefix + file_name`` (default: Label Studio's local-files URL,
  with ``LOCAL_FILES_DOCUMENT_ROOT`` set to the pool folder).

Import reads a COCO file (the tool's export) with :func:`read_coco`. Each image is
matched to a pool item by its ``file_name``'s trailing path (tools keep or strip
folders), the ``id`` breaking ties; an image listed without annotations is a frame
labeled as holding no pedestrian. The whole file is checked before anything is
written: a malformed file, an unknown image or a size mismatch raises
:class:`DataError` naming the file, and the pool is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from alscout.errors import DataError
from alscout.trainer.data.annotations import Dataset, ImageRecord
from alscout.trainer.data.coco import read_coco, write_coco
from alscout.trainer.fleet.pool import LabelPool, PoolItem, now_iso

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
    """The files one export wrote and how many images they list."""

    coco: Path
    image_list: Path
    label_studio: Path
    count: int


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
) -> TaskExport:
    """Write labeling tasks for ``items`` (default: every unlabeled pool item)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(pool.unlabeled() if items is None else items)
    records = [
        ImageRecord(
            image_id=item.item_id,
            source=pool.image_path(item),
            width=item.width,
            height=item.height,
            sequence=f"{item.recording_id}/{item.camera_id}",
        )
        for item in chosen
    ]
    coco = write_coco(Dataset(records, name="alscout-tasks"), out / "tasks_coco.json", pool.root)
    image_list = out / "images.txt"
    image_list.write_text(
        "".join(f"{pool.image_path(item).resolve()}\n" for item in chosen), encoding="utf-8"
    )
    tasks = [
        {
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
        for item in chosen
    ]
    label_studio = out / "tasks_label_studio.json"
    label_studio.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    log.info("exported labeling tasks out=%s images=%d", out, len(chosen))
    return TaskExport(coco, image_list, label_studio, len(chosen))


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
    """Apply a COCO labels file to the pool, all or nothing; returns what changed."""
    source = Path(labels_file)
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
