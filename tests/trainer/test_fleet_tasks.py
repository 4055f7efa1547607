from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import read_coco
from alscout.trainer.fleet.oracle import frames_by_index, oracle_labels
from alscout.trainer.fleet.pool import LabelPool, PoolItem
from alscout.trainer.fleet.tasks import export_tasks, import_labels


def make_pool(root: Path, frames: dict[str, list[int]], size=(48, 64)) -> LabelPool:
    """A pool with one PNG per (recording, frame); images are 64 x 48 noise."""
    pool = LabelPool(root)
    rng = np.random.default_rng(0)
    with pool.edit() as state:
        for recording, indices in frames.items():
            for frame in indices:
                relative = f"images/{recording}/cam/{frame:012d}.png"
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                pool.write_image(relative, cv2.imencode(".png", image)[1].tobytes())
                state.items.append(
                    PoolItem(
                        item_id=len(state.items) + 1,
                        file=relative,
                        recording_id=recording,
                        camera_id="cam",
                        frame_index=frame,
                        width=size[1],
                        height=size[0],
                        phash=f"{len(state.items):016x}",
                        sha256="0" * 64,
                        source="sink",
                        vehicle="car",
                    )
                )
    return pool


def ground_truth(recording: str, count: int, width=64, height=48) -> Dataset:
    """Frame i has one box whose x is i (so a wrong frame shows)."""
    return Dataset(
        [
            ImageRecord(i, Path("video.avi"), width, height, (Box(float(i), 4.0, 10.0, 30.0),), i)
            for i in range(count)
        ],
        name=recording,
    )


def test_export_writes_coco_image_list_and_label_studio(tmp_path):
    pool = make_pool(tmp_path / "pool", {"rec1": [0, 20], "rec2": [5]})
    export = export_tasks(pool, tmp_path / "out")
    assert export.count == 3
    coco = json.loads(export.coco.read_text())
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    assert coco["images"][1]["file_name"] == "images/rec1/cam/000000000020.png"
    assert coco["annotations"] == []
    # the COCO file reads back against the pool folder as image root
    data = read_coco(export.coco, image_root=pool.root)
    assert [r.source for r in data] == [pool.image_path(i) for i in pool.items]
    lines = export.image_list.read_text().splitlines()
    assert lines == [str(pool.image_path(i).resolve()) for i in pool.items]
    assert all(Path(line).is_file() for line in lines)
    tasks = json.loads(export.label_studio.read_text())
    assert tasks[2]["data"]["image"] == "/data/local-files/?d=images/rec2/cam/000000000005.png"
    assert tasks[2]["data"]["frame_index"] == 5
    assert tasks[2]["id"] == 3


def test_oracle_round_trip_labels_the_pool(tmp_path):
    pool = make_pool(tmp_path / "pool", {"rec1": [0, 20], "rec2": [5]})
    labels = oracle_labels(pool, {"rec1": ground_truth("rec1", 30)}, tmp_path / "labels.json")
    result = import_labels(pool, labels)
    assert (result.images, result.boxes, result.relabeled) == (2, 2, 0)
    labeled = {item.frame_index: item.boxes for item in LabelPool(pool.root).labeled()}
    assert labeled == {0: (Box(0.0, 4.0, 10.0, 30.0),), 20: (Box(20.0, 4.0, 10.0, 30.0),)}
    assert [i.recording_id for i in pool.unlabeled()] == ["rec2"]  # no ground truth for it
    assert pool.label_imports[0]["images"] == 2
    # the next export lists only what is still unlabeled
    assert export_tasks(pool, tmp_path / "out2").count == 1


def test_oracle_scales_boxes_to_the_uploaded_size(tmp_path):
    pool = make_pool(tmp_path / "pool", {"rec": [3]}, size=(24, 32))
    labels = oracle_labels(pool, {"rec": ground_truth("rec", 5)}, tmp_path / "l.json")
    import_labels(pool, labels)
    assert pool.labeled()[0].boxes == (Box(1.5, 2.0, 5.0, 15.0),)


def test_oracle_missing_frame_and_duplicate_frames(tmp_path):
    pool = make_pool(tmp_path / "pool", {"rec": [50]})
    with pytest.raises(DataError, match="no frame 50"):
        oracle_labels(pool, {"rec": ground_truth("rec", 10)}, tmp_path / "l.json")
    twice = Dataset(
        [ImageRecord(0, Path("v"), 4, 4, (), 1), ImageRecord(1, Path("v"), 4, 4, (), 1)]
    )
    with pytest.raises(DataError, match="twice"):
        frames_by_index(twice)


def coco_labels(path: Path, images, annotations) -> Path:
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
            }
        )
    )
    return path


def test_import_matches_flattened_names_and_relabels(tmp_path):
    pool = make_pool(tmp_path / "pool", {"rec1": [0], "rec2": [7]})
    # a tool that strips folders and renumbers ids; a car box is dropped
    labels = coco_labels(
        tmp_path / "tool.json",
        [{"id": 70, "file_name": "000000000007.png", "width": 64, "height": 48}],
        [
            {"id": 1, "image_id": 70, "category_id": 1, "bbox": [1, 2, 10, 20]},
            {"id": 2, "image_id": 70, "category_id": 2, "bbox": [3, 3, 10, 10]},
        ],
    )
    first = import_labels(pool, labels)
    assert (first.images, first.boxes, first.relabeled) == (1, 1, 0)
    assert pool.labeled()[0].recording_id == "rec2"
    again = import_labels(pool, labels)
    assert again.relabeled == 1
    # an image listed without boxes is labeled "no pedestrian"
    empty = coco_labels(
        tmp_path / "empty.json",
        [{"id": 1, "file_name": "images/rec1/cam/000000000000.png", "width": 64, "height": 48}],
        [],
    )
    import_labels(pool, empty)
    assert pool.items[0].boxes == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "empty"),
        (json.dumps({"annotations": []}), "not a COCO file"),
        (json.dumps({"images": []}), "lists no images"),
        (
            json.dumps(
                {"images": [{"id": 1, "file_name": "images/x/cam/000000000009.png", "width": 64}]}
            ),
            "lacks the field 'height'",
        ),
        (
            json.dumps(
                {"images": [{"id": "one", "file_name": "a.png", "width": 64, "height": 48}]}
            ),
            "malformed COCO labels",
        ),
        (
            json.dumps(
                {
                    "images": [
                        {"id": 1, "file_name": "images/nope/cam/1.png", "width": 64, "height": 48}
                    ]
                }
            ),
            "not in the pool",
        ),
        (
            json.dumps(
                {"images": [{"id": 99, "file_name": "000000000000.png", "width": 64, "height": 48}]}
            ),
            "matches several pool images",
        ),
        (
            json.dumps(
                {
                    "images": [
                        {
                            "id": 1,
                            "file_name": "images/rec1/cam/000000000000.png",
                            "width": 640,
                            "height": 480,
                        }
                    ]
                }
            ),
            "640x480",
        ),
        (
            json.dumps(
                {
                    "images": [
                        {
                            "id": 1,
                            "file_name": "rec1/cam/000000000000.png",
                            "width": 64,
                            "height": 48,
                        },
                        {
                            "id": 2,
                            "file_name": "rec1/cam/000000000000.png",
                            "width": 64,
                            "height": 48,
                        },
                    ]
                }
            ),
            "are both",
        ),
        (
            json.dumps(
                {
                    "images": [
                        {
                            "id": 1,
                            "file_name": "images/rec1/cam/000000000000.png",
                            "width": 64,
                            "height": 48,
                        }
                    ],
                    "annotations": [
                        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]}
                    ],
                    "categories": [{"id": 1, "name": "person"}],
                }
            ),
            "outside",
        ),
    ],
)
def test_malformed_label_file_is_rejected_by_name_and_pool_unchanged(tmp_path, content, message):
    pool = make_pool(tmp_path / "pool", {"rec1": [0], "rec2": [0]})
    import_labels(
        pool,
        oracle_labels(pool, {"rec2": ground_truth("rec2", 3)}, tmp_path / "good.json"),
    )
    before = pool.manifest_path.read_bytes()
    bad = tmp_path / "bad_labels.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        import_labels(pool, bad)
    assert str(bad) in str(caught.value)
    assert pool.manifest_path.read_bytes() == before
    assert [i.recording_id for i in LabelPool(pool.root).labeled()] == ["rec2"]
