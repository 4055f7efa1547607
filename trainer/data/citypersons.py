"""CityPersons: one JSON per image with ``objects`` (read and write).

Each file (``<city>_<seq>_<frame>_gtBboxCityPersons.json``) holds::

    {"imgHeight": 1024, "imgWidth": 2048,
     "objects": [{"label": "pedestrian", "bbox": [x, y, w, h], "bboxVis": [x, y, w, h],
                  "instanceId": 24000}]}

``pedestrian`` is a positive (label ``person``). ``ignore`` regions, ``rider``,
``sitting person``, ``person (other)`` and ``person group`` are ignore boxes, as in the
CityPersons "reasonable" protocol; other labels are dropped. ``bbox`` is the full
body (the default, as the paper trains on), ``bboxVis`` the visible part.

The image of ``<A>/<split>/<city>/<stem>_gtBboxCityPersons.json`` is
``<images>/<split>/<city>/<stem>_leftImg8bit.png`` (or, failing that, ``<stem>.png``
or ``.jpg``, as :func:`write_citypersons` names them for other images): the image root
mirrors the annotation root (default: the image sits next to its JSON).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from alscout.errors import DataError, InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord, clip_to_image

__all__ = ["read_citypersons", "write_citypersons", "CITYPERSONS_IGNORE_LABELS"]

log = logging.getLogger(__name__)

CITYPERSONS_IGNORE_LABELS = ("ignore", "rider", "sitting person", "person (other)", "person group")
_ANN_SUFFIX = "_gtBboxCityPersons.json"
_IMG_SUFFIX = "_leftImg8bit.png"


def _stem(json_path: Path) -> str:
    name = json_path.name
    return name[: -len(_ANN_SUFFIX)] if name.endswith(_ANN_SUFFIX) else json_path.stem


def _image_for(json_path: Path, folder: Path) -> Path:
    """``<stem>_leftImg8bit.png`` in ``folder``, else ``<stem>.<image suffix>`` if present."""
    stem = _stem(json_path)
    cityscapes = folder / (stem + _IMG_SUFFIX)
    if cityscapes.is_file():
        return cityscapes
    for suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return cityscapes


def _read_one(
    json_path: Path, image_path: Path, image_id: int, use_visible: bool, check_files: bool
) -> ImageRecord:
    text = json_path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{json_path}: annotation file is empty")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{json_path}: not valid JSON ({error})") from error
    try:
        width, height = int(data["imgWidth"]), int(data["imgHeight"])
        objects = list(data["objects"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{json_path}: not a CityPersons file (needs imgWidth, imgHeight, objects)"
        ) from None
    if check_files and not image_path.is_file():
        raise DataError(f"{json_path}: its image {image_path} is missing")
    boxes = []
    for index, obj in enumerate(objects):
        label = str(obj.get("label", ""))
        if label == "pedestrian":
            name, ignore = "person", False
        elif label in CITYPERSONS_IGNORE_LABELS:
            name, ignore = label, True
        else:
            log.debug("citypersons file=%s dropped_label=%s", json_path, label)
            continue
        key = "bboxVis" if use_visible and "bboxVis" in obj else "bbox"
        bbox = obj.get(key)
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{json_path}: object {index} has no {key} [x, y, w, h]")
        x, y, w, h = (float(v) for v in bbox)
        box = Box(x, y, w, h, name, ignore, int(obj.get("instanceId", -1)))
        boxes.append(clip_to_image(box, width, height, f"{json_path}: object {index}"))
    return ImageRecord(image_id, image_path, width, height, tuple(boxes))


def read_citypersons(
    annotations: Path | str,
    images: Path | str | None = None,
    use_visible: bool = False,
    check_files: bool = True,
) -> Dataset:
    """Read one CityPersons JSON file or every one under a folder (sorted by path).

    ``images``: the image root mirroring ``annotations`` (default: next to each JSON).
    ``use_visible``: take ``bboxVis`` instead of the full-body ``bbox``.
    """
    root = Path(annotations)
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files, base = sorted(root.rglob("*.json")), root
        if not files:
            raise DataError(f"{root}: no CityPersons .json files under this folder")
    else:
        raise DataError(f"{root}: CityPersons annotations not found")
    image_root = base if images is None else Path(images)
    records = []
    for image_id, json_path in enumerate(files):
        image_path = _image_for(json_path, image_root / json_path.parent.relative_to(base))
        records.append(_read_one(json_path, image_path, image_id, use_visible, check_files))
    log.info("citypersons path=%s images=%d", root, len(records))
    return Dataset(images=records, name=root.stem)


def write_citypersons(dataset: Dataset, folder: Path | str) -> list[Path]:
    """Write one ``<image stem>_gtBboxCityPersons.json`` per still image into ``folder``.

    Positive persons become ``pedestrian``; ignore boxes keep their label when it is a
    CityPersons one and are otherwise written as ``ignore``. ``bboxVis`` equals
    ``bbox`` (the internal model keeps one box). Returns the files written.
    """
    folder = Path(folder)
    if any(r.frame is not None for r in dataset):
        raise InvalidInputError("CityPersons holds still images; extract video frames first")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for record in dataset:
        objects = []
        for box in record.boxes:
            if not box.ignore:
                label = "pedestrian"
            else:
                label = box.label if box.label in CITYPERSONS_IGNORE_LABELS else "ignore"
            bbox = [box.x, box.y, box.w, box.h]
            objects.append(
                {"label": label, "bbox": bbox, "bboxVis": bbox, "instanceId": box.track_id}
            )
        stem = Path(record.source).stem
        if stem.endswith("_leftImg8bit"):
            stem = stem[: -len("_leftImg8bit")]
        out = folder / (stem + _ANN_SUFFIX)
        document = {"imgHeight": record.height, "imgWidth": record.width, "objects": objects}
        out.write_text(json.dumps(document, indent=1), encoding="utf-8")
        written.append(out)
    return written
