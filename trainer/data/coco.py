"""COCO JSON: read and write, with the person category and ignore regions.

Layout read and written (COCO "instances" files)::

    {"images": [{"id", "file_name", "width", "height"}],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h],
                      "area", "iscrowd", "ignore"}],
     "categories": [{"id", "name"}]}

An annotation with ``iscrowd`` or ``ignore`` set is an ignore box. Video frames use
two extension fields on the image (as COCO-VID/TAO do): ``file_name`` names the video
and ``frame_index`` the 0-based frame; ``sequence`` is kept when present, and
``track_id`` on annotations. Paths are relative to ``image_root`` (default: the JSON
file's folder). Only categories listed in ``labels`` are read as positives, those in
``ignore_labels`` as ignore boxes; the rest (cars, dogs, ...) are dropped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord, clip_to_image

__all__ = ["read_coco", "write_coco", "DEFAULT_IGNORE_LABELS"]

log = logging.getLogger(__name__)

#: Categories that are regions to ignore rather than objects to find (CityPersons's
#: non-pedestrian persons and crowds, Caltech's "people").
DEFAULT_IGNORE_LABELS: tuple[str, ...] = (
    "ignore",
    "rider",
    "sitting person",
    "person (other)",
    "person group",
    "people",
    "person?",
)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path}: annotation file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error


def _field(entry: dict[str, Any], key: str, path: Path, what: str) -> Any:
    try:
        return entry[key]
    except (KeyError, TypeError):
        raise DataError(f"{path}: {what} lacks the field {key!r}") from None


def read_coco(
    path: Path | str,
    image_root: Path | str | None = None,
    labels: tuple[str, ...] = ("person",),
    ignore_labels: tuple[str, ...] = DEFAULT_IGNORE_LABELS,
    check_files: bool = True,
) -> Dataset:
    """Read a COCO JSON file into a :class:`Dataset` (images in file order).

    ``check_files``: raise :class:`DataError` when an image or video file is missing.
    Boxes sticking out of their image are clipped; boxes wholly outside raise.
    """
    path = Path(path)
    root = path.parent if image_root is None else Path(image_root)
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: not a COCO file (no 'images' list)")
    categories: dict[int, str] = {}
    for cat in data.get("categories", []):
        categories[int(_field(cat, "id", path, "a category"))] = str(
            _field(cat, "name", path, "a category")
        )
    records: dict[int, dict[str, Any]] = {}
    for entry in data["images"]:
        image_id = int(_field(entry, "id", path, "an image"))
        if image_id in records:
            raise DataError(f"{path}: image id {image_id} appears twice")
        source = root / str(_field(entry, "file_name", path, f"image {image_id}"))
        if check_files and not source.is_file():
            raise DataError(f"{path}: image {image_id} refers to a missing file {source}")
        frame = entry.get("frame_index")
        records[image_id] = {
            "image_id": image_id,
            "source": source,
            "width": int(_field(entry, "width", path, f"image {image_id}")),
            "height": int(_field(entry, "height", path, f"image {image_id}")),
            "frame": None if frame is None else int(frame),
            "sequence": str(entry.get("sequence", "")),
            "boxes": [],
        }
    dropped = 0
    for ann in data.get("annotations", []):
        ann_id = ann.get("id", "?")
        image_id = int(_field(ann, "image_id", path, f"annotation {ann_id}"))
        if image_id not in records:
            raise DataError(f"{path}: annotation {ann_id} refers to unknown image {image_id}")
        cat_id = int(_field(ann, "category_id", path, f"annotation {ann_id}"))
        if cat_id not in categories:
            raise DataError(f"{path}: annotation {ann_id} has unknown category {cat_id}")
        name = categories[cat_id]
        if name not in labels and name not in ignore_labels:
            dropped += 1
            continue
        bbox = _field(ann, "bbox", path, f"annotation {ann_id}")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{path}: annotation {ann_id} bbox must be [x, y, w, h]")
        ignore = bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)) or name in ignore_labels
        x, y, w, h = (float(v) for v in bbox)
        box = Box(x, y, w, h, label=name, ignore=ignore, track_id=int(ann.get("track_id", -1)))
        rec = records[image_id]
        rec["boxes"].append(
            clip_to_image(box, rec["width"], rec["height"], f"{path}: annotation {ann_id}")
        )
    if dropped:
        log.info("coco path=%s dropped_other_categories=%d", path, dropped)
    images = [
        ImageRecord(
            image_id=r["image_id"],
            source=r["source"],
            width=r["width"],
            height=r["height"],
            boxes=tuple(r["boxes"]),
            frame=r["frame"],
            sequence=r["sequence"],
        )
        for r in records.values()
    ]
    present = {b.label for r in images for b in r.boxes if not b.ignore}
    ordered = tuple(label for label in labels if label in present) or labels
    return Dataset(images=images, name=path.stem, labels=ordered)


def _relative(source: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(source.resolve(), root.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return source.resolve().as_posix()


def write_coco(dataset: Dataset, path: Path | str, image_root: Path | str | None = None) -> Path:
    """Write ``dataset`` as COCO JSON; file names relative to ``image_root``.

    ``image_root`` defaults to the output file's folder. Every distinct box label gets a
    category (dataset labels first, ids from 1). Ignore boxes get ``iscrowd = 1`` and
    ``ignore = 1``. Returns the path written.
    """
    path = Path(path)
    root = path.parent if image_root is None else Path(image_root)
    names = list(dataset.labels)
    for record in dataset:
        for box in record.boxes:
            if box.label not in names:
                names.append(box.label)
    category_ids = {name: i + 1 for i, name in enumerate(names)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for record in dataset:
        entry: dict[str, Any] = {
            "id": record.image_id,
            "file_name": _relative(Path(record.source), root),
            "width": record.width,
            "height": record.height,
        }
        if record.frame is not None:
            entry["frame_index"] = record.frame
        if record.sequence:
            entry["sequence"] = record.sequence
        images.append(entry)
        for box in record.boxes:
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": record.image_id,
                "category_id": category_ids[box.label],
                "bbox": [box.x, box.y, box.w, box.h],
                "area": box.w * box.h,
                "iscrowd": int(box.ignore),
                "ignore": int(box.ignore),
            }
            if box.track_id >= 0:
                ann["track_id"] = box.track_id
            annotations.append(ann)
    document = {
        "info": {"description": dataset.name or path.stem, "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": n, "supercategory": "person"} for n, i in category_ids.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    log.info("wrote coco path=%s images=%d boxes=%d", path, len(images), len(annotations))
    return path
