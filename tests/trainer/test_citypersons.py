"""CityPersons per-image JSON reader and writer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError, InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.citypersons import read_citypersons, write_citypersons
from alscout.trainer.data.formats import guess_format, read_dataset

STEM = "aachen_000000_000019"
OBJECTS = [
    {"label": "pedestrian", "bbox": [10, 20, 30, 80], "bboxVis": [12, 20, 20, 40], "instanceId": 1},
    {"label": "ignore", "bbox": [100, 20, 50, 50], "bboxVis": [100, 20, 50, 50], "instanceId": 0},
    {"label": "rider", "bbox": [150, 20, 30, 70], "bboxVis": [150, 20, 30, 70], "instanceId": 2},
    {"label": "sitting person", "bbox": [180, 90, 40, 40], "bboxVis": [180, 90, 40, 40]},
    {"label": "car", "bbox": [0, 0, 10, 10]},
]


def _tree(root: Path, objects: list | None = None) -> tuple[Path, Path]:
    ann = root / "gtBboxCityPersons" / "train" / "aachen"
    img = root / "leftImg8bit" / "train" / "aachen"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)
    doc = {"imgHeight": 128, "imgWidth": 256, "objects": OBJECTS if objects is None else objects}
    (ann / f"{STEM}_gtBboxCityPersons.json").write_text(json.dumps(doc))
    cv2.imwrite(str(img / f"{STEM}_leftImg8bit.png"), np.zeros((128, 256, 3), np.uint8))
    return root / "gtBboxCityPersons", root / "leftImg8bit"


def test_labels_and_mirrored_image_tree(tmp_path: Path) -> None:
    ann, img = _tree(tmp_path)
    data = read_citypersons(ann, img)
    (record,) = data.images
    assert record.source == img / "train" / "aachen" / f"{STEM}_leftImg8bit.png"
    assert (record.width, record.height) == (256, 128)
    assert [(b.label, b.ignore) for b in record.boxes] == [
        ("person", False),
        ("ignore", True),
        ("rider", True),
        ("sitting person", True),
    ]
    assert record.boxes[0] == Box(10, 20, 30, 80, track_id=1)
    assert record.boxes[3].h == 38  # clipped at the bottom edge
    visible = read_citypersons(ann, img, use_visible=True)
    assert visible[0].boxes[0] == Box(12, 20, 20, 40, track_id=1)
    assert guess_format(ann) == "citypersons"
    assert read_dataset(ann, images=img).images == data.images


def test_errors_name_the_file(tmp_path: Path) -> None:
    ann, img = _tree(tmp_path)
    with pytest.raises(DataError, match=r"gtBboxCityPersons\.json.*image .* is missing"):
        read_citypersons(ann, tmp_path / "elsewhere")
    path = next(ann.rglob("*.json"))
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_citypersons(ann, img)
    path.write_text(json.dumps({"objects": []}))
    with pytest.raises(DataError, match="not a CityPersons file"):
        read_citypersons(ann, img)
    path.write_text(
        json.dumps({"imgHeight": 10, "imgWidth": 10, "objects": [{"label": "pedestrian"}]})
    )
    with pytest.raises(DataError, match="object 0 has no bbox"):
        read_citypersons(ann, img)
    with pytest.raises(DataError, match="no CityPersons"):
        read_citypersons(tmp_path / "leftImg8bit")


def test_write_then_read(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "f1.png"), np.zeros((48, 64, 3), np.uint8))
    data = Dataset(
        [
            ImageRecord(
                0,
                tmp_path / "f1.png",
                64,
                48,
                (Box(1, 2, 10, 30, track_id=3), Box(20, 2, 10, 30, ignore=True, track_id=4)),
            )
        ]
    )
    (written,) = write_citypersons(data, tmp_path / "ann")
    assert written.name == "f1_gtBboxCityPersons.json"
    back = read_citypersons(tmp_path / "ann", tmp_path)
    assert back[0].source == tmp_path / "f1.png"
    assert back[0].boxes == (Box(1, 2, 10, 30, track_id=3), Box(20, 2, 10, 30, "ignore", True, 4))
    with pytest.raises(InvalidInputError):
        write_citypersons(Dataset([ImageRecord(0, Path("v.avi"), 9, 9, frame=0)]), tmp_path / "x")
