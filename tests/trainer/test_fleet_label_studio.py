"""Pre-annotations out (COCO and Label Studio), Label Studio's JSON export back in."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.apps.cli import main
from alscout.errors import DataError
from alscout.trainer.data.annotations import Box
from alscout.trainer.fleet.pool import LabelPool, PoolItem
from alscout.trainer.fleet.preannotate import predict_boxes
from alscout.trainer.fleet.tasks import import_labels

SIZE = (48, 64)  # height, width of the pool's images


def make_pool(root: Path, count: int = 3) -> LabelPool:
    """A pool of ``count`` noise PNGs of recording rec-1, camera cam."""
    pool = LabelPool(root)
    rng = np.random.default_rng(0)
    with pool.edit() as state:
        for n in range(count):
            relative = f"images/rec-1/cam/{10 * n:012d}.png"
            image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), SIZE[::-1])
            pool.write_image(relative, cv2.imencode(".png", image)[1].tobytes())
            state.items.append(
                PoolItem(
                    item_id=n + 1,
                    file=relative,
                    recording_id="rec-1",
                    camera_id="cam",
                    frame_index=10 * n,
                    width=SIZE[1],
                    height=SIZE[0],
                    phash=f"{n:016x}",
                    sha256="0" * 64,
                    source="sink",
                    vehicle="car",
                )
            )
    return pool


@pytest.fixture
def exported(tiny_model, tmp_path, capsys):
    pool = make_pool(tmp_path / "pool")
    out = tmp_path / "tasks"
    args = ["--pool", str(pool.root), "--out", str(out), "--model", str(tiny_model)]
    assert main(["fleet", "export-tasks", *args, "--pre-threshold", "0.9"]) == 0
    assert "predictions=" in capsys.readouterr().out
    return pool, out


def label_studio_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio's JSON export holds after a labeler submitted each task's
    predicted boxes as they were (the prediction's result becomes the annotation's)."""
    exported = []
    for task in tasks:
        result = [
            {k: v for k, v in r.items() if k != "score"} for r in task["predictions"][0]["result"]
        ]
        exported.append(
            {
                **task,
                "annotations": [
                    {
                        "id": 100 + task["id"],
                        "result": result,
                        "was_cancelled": False,
                        "updated_at": "2026-12-01T10:00:00Z",
                    }
                ],
            }
        )
    return exported


def test_tasks_carry_the_model_s_detections_marked_as_predictions(exported, tiny_model):
    pool, out = exported
    expected = predict_boxes(pool, pool.items, tiny_model, threshold=0.9)
    assert sum(len(b) for b in expected.boxes.values()) > 3
    coco = json.loads((out / "tasks_coco.json").read_text())
    assert coco["info"]["pre_annotations"]["model_version"] == "test-1"
    assert all(a["prediction"] == 1 and 0.9 < a["score"] <= 1.0 for a in coco["annotations"])
    by_image: dict[int, list[list[float]]] = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["bbox"])
    for item_id, boxes in expected.boxes.items():
        assert by_image.get(item_id, []) == [[b.box.x, b.box.y, b.box.w, b.box.h] for b in boxes]
    tasks = json.loads((out / "tasks_label_studio.json").read_text())
    assert [t["id"] for t in tasks] == [1, 2, 3]
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "test-1"
        assert len(prediction["result"]) == len(expected.boxes[task["id"]])
        assert {r["type"] for r in prediction["result"]} == {"rectanglelabels"}


def test_label_studio_round_trip_gives_back_the_boxes(exported, tiny_model, tmp_path, capsys):
    pool, out = exported
    tasks = json.loads((out / "tasks_label_studio.json").read_text())
    labels = tmp_path / "project-1-at-2026-12-01.json"
    labels.write_text(json.dumps(label_studio_export(tasks)))
    assert main(["fleet", "import-labels", "--pool", str(pool.root), str(labels)]) == 0
    assert capsys.readouterr().out.startswith("imported images=3 ")
    expected = predict_boxes(pool, pool.items, tiny_model, threshold=0.9)
    pool.refresh()
    for item in pool.items:
        assert item.labeled
        want = [b.box for b in expected.boxes[item.item_id]]
        assert len(item.boxes) == len(want)
        for got, box in zip(item.boxes, want, strict=True):
            assert (got.x, got.y, got.w, got.h) == pytest.approx(
                (box.x, box.y, box.w, box.h), abs=1e-9
            )
            assert got.label == "person" and not got.ignore


def test_coco_tasks_still_holding_predictions_are_not_labels(exported, capsys):
    pool, out = exported
    args = ["--pool", str(pool.root), str(out / "tasks_coco.json")]
    assert main(["fleet", "import-labels", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alscout fleet import-labels: ") and "is a model prediction" in err
    pool.refresh()
    assert pool.labeled() == [] and pool.label_imports == []


def test_label_studio_import_rules(tmp_path):
    pool = make_pool(tmp_path / "pool")
    width, height = SIZE[1], SIZE[0]

    def rect(x, y, w, h, label="person", **extra):
        return {
            "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": width, "original_height": height,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [label]},
            **extra,
        }  # fmt: skip

    tasks = [
        {  # matched by alscout_item; the later annotation wins; an ignore region
            "id": 7,
            "data": {"image": "/data/upload/1/x.png", "alscout_item": 1},
            "annotations": [
                {"result": [rect(0, 0, 50, 50)], "updated_at": "2026-01-01T00:00:00Z"},
                {
                    "result": [
                        rect(25, 50, 25, 25),
                        rect(0, 0, 10, 10, "ignore"),
                        rect(5, 5, 5, 5, "car"),
                    ],
                    "updated_at": "2026-01-02T00:00:00Z",
                },
            ],
        },
        {  # matched by its uploaded file's name; labeled as holding no pedestrian
            "id": 8,
            "data": {"image": "/data/upload/1/0a1b2c3d-000000000010.png"},
            "annotations": [{"result": []}],
        },
        {  # only a cancelled annotation: not labeled
            "id": 9,
            "data": {"alscout_item": 3},
            "annotations": [{"result": [rect(0, 0, 5, 5)], "was_cancelled": True}],
        },
    ]
    labels = tmp_path / "export.json"
    labels.write_text(json.dumps(tasks))
    result = import_labels(pool, labels)
    assert (result.images, result.boxes) == (2, 2)
    items = {item.item_id: item for item in pool.items}
    assert items[1].boxes == (
        Box(16.0, 24.0, 16.0, 12.0),
        Box(0.0, 0.0, 6.4, 4.8, label="ignore", ignore=True),
    )
    assert items[2].boxes == () and items[3].boxes is None

    tasks[0]["annotations"][1]["result"] = [rect(0, 0, 10, 10, original_width=640)]
    labels.write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="task 7: image is 640x48, the pool's"):
        import_labels(pool, labels)
    labels.write_text(json.dumps([{"id": 1, "data": {"alscout_item": 99}, "annotations": [{}]}]))
    with pytest.raises(DataError, match="alscout_item 99 is not in the pool"):
        import_labels(pool, labels)
