"""COCO JSON reader and writer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import read_coco, write_coco
from alscout.trainer.data.formats import guess_format, read_dataset, write_dataset


def _image(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))
    return path


def _doc(**over: object) -> dict:
    doc = {
        "images": [{"id": 7, "file_name": "img/a.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [30, 2, 10, 20], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [5, 5, 5, 5], "ignore": 1},
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [5, 5, 5, 5]},
            {"id": 5, "image_id": 7, "category_id": 2, "bbox": [50, 30, 20, 30]},
        ],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 2, "name": "rider"},
            {"id": 3, "name": "car"},
        ],
    }
    doc.update(over)
    return doc


def test_read_person_ignore_and_other_categories(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    (tmp_path / "a.json").write_text(json.dumps(_doc()))
    data = read_coco(tmp_path / "a.json")
    (record,) = data.images
    assert record.image_id == 7 and record.source == tmp_path / "img" / "a.png"
    assert (record.width, record.height, record.frame) == (64, 48, None)
    # car dropped; crowd, ignore flag and rider are ignore boxes; rider clipped to the image
    assert [(b.label, b.ignore) for b in record.boxes] == [
        ("person", False),
        ("person", True),
        ("person", True),
        ("rider", True),
    ]
    assert record.boxes[3] == Box(50, 30, 14, 18, "rider", True)


def test_roundtrip_with_video_frames(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    video.write_bytes(b"x")  # existence is all the reader checks
    data = Dataset(
        [
            ImageRecord(0, video, 640, 480, (Box(1.5, 2, 30, 60, track_id=4),), 0, "s"),
            ImageRecord(1, video, 640, 480, (Box(10, 20, 30, 60, ignore=True),), 1, "s"),
            ImageRecord(2, video, 640, 480, (), 2, "s"),
        ],
        name="clip",
    )
    out = write_coco(data, tmp_path / "ann" / "clip.json", image_root=tmp_path)
    assert json.loads(out.read_text())["images"][1]["file_name"] == "clip.avi"
    back = read_coco(out, image_root=tmp_path)
    assert back.images == data.images
    assert guess_format(out) == "coco"
    again = read_dataset(write_dataset(back, tmp_path / "b.json", "coco"), images=tmp_path)
    assert again.images == data.images


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["annotations"].append(
                {"id": 9, "image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1]}
            ),
            "unknown image 8",
        ),
        (
            lambda d: d["annotations"].append(
                {"id": 9, "image_id": 7, "category_id": 1, "bbox": [100, 0, 5, 5]}
            ),
            "outside",
        ),
        (
            lambda d: d["annotations"].append(
                {"id": 9, "image_id": 7, "category_id": 9, "bbox": [0, 0, 1, 1]}
            ),
            "unknown category",
        ),
        (lambda d: d["images"][0].update(file_name="img/missing.png"), "missing file"),
        (lambda d: d["images"].append(dict(d["images"][0])), "appears twice"),
        (lambda d: d.pop("images"), "not a COCO file"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    _image(tmp_path / "img" / "a.png")
    doc = _doc()
    mutate(doc)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"bad\.json.*{message}"):
        read_coco(tmp_path / "bad.json")


def test_empty_missing_and_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text("  \n")
    with pytest.raises(DataError, match=r"e\.json: annotation file is empty"):
        read_coco(tmp_path / "e.json")
    with pytest.raises(DataError, match=r"none\.json.*not found"):
        read_coco(tmp_path / "none.json")
    with pytest.raises(DataError, match=r"e\.json.*unknown annotation format 'pascal'"):
        read_dataset(tmp_path / "e.json", fmt="pascal")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataError, match="cannot tell"):
        read_dataset(tmp_path / "x.xml")
