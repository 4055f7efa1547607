"""Oracles: ground truth, and the file round trip of a human labeling round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alscout.errors import DataError
from alscout.trainer.al.oracle import FileOracle, GroundTruthOracle, LabelingPending
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord


def _pool() -> Dataset:
    return Dataset(
        [
            ImageRecord(10 + i, Path("v.avi"), 64, 48, (Box(1, 2, 10, 20),) * i, frame=i)
            for i in range(5)
        ]
    )


def test_ground_truth_answers_with_the_pool() -> None:
    pool = _pool()
    records = GroundTruthOracle(pool).label([3, 1], Path("unused"))
    assert records == [pool[3], pool[1]]


def test_file_oracle_pauses_then_reads_labels(tmp_path: Path) -> None:
    oracle = FileOracle(_pool())
    with pytest.raises(LabelingPending, match=r"to_label\.json"):
        oracle.label([4, 2], tmp_path)
    request = json.loads((tmp_path / "to_label.json").read_text())
    assert [r["image_id"] for r in request] == [14, 12]
    assert request[0]["frame"] == 4 and request[0]["source"] == "v.avi"
    labels = {
        "images": [{"id": 14}, {"id": 12}],
        "annotations": [
            {"image_id": 12, "bbox": [5, 6, 7, 8]},
            {"image_id": 12, "bbox": [1, 1, 3, 9], "ignore": 1},
        ],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    first, second = oracle.label([4, 2], tmp_path)
    assert first.image_id == 14 and first.boxes == ()  # labeled: nobody there
    assert second.boxes == (Box(5, 6, 7, 8), Box(1, 1, 3, 9, ignore=True))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("{not json", "not a COCO labels file"),
        (json.dumps({"images": [{"id": 14}]}), "requested images \\[12\\]"),
        (
            json.dumps({"images": [{"id": 14}, {"id": 12}],
                        "annotations": [{"image_id": 12, "bbox": [0, 0, 0, 5]}]}),
            "without area",
        ),
    ],
)  # fmt: skip
def test_bad_labels_name_the_file(tmp_path: Path, labels: str, message: str) -> None:
    (tmp_path / "labels.json").write_text(labels)
    with pytest.raises(DataError, match=message) as info:
        FileOracle(_pool()).label([4, 2], tmp_path)
    assert "labels.json" in str(info.value)


# --- the fleet's round trip: label pool -> export-tasks -> tool -> import-labels ----


def _still_pool(folder: Path) -> Dataset:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    records = []
    for i in range(3):
        path = folder / f"still{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (48, 64, 3), np.uint8))
        truth = (Box(1, 2, 10, 20),)  # the pool's ground truth: the oracle must not use it
        records.append(ImageRecord(20 + i, path, 64, 48, truth, sequence="cam 7"))
    return Dataset(records)


def _labels_from_tasks(tasks: Path, boxes: dict[int, list[float]], only: set[int]) -> dict:
    """What a labeling tool returns: the exported images with the person's boxes."""
    exported = json.loads((tasks / "tasks_coco.json").read_text())
    images = [image for image in exported["images"] if image["id"] in only]
    annotations = [
        {"id": n, "image_id": image_id, "category_id": 1, "bbox": bbox}
        for n, (image_id, bbox) in enumerate(boxes.items(), 1)
        if image_id in only
    ]
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }


def test_fleet_oracle_pauses_until_the_fleet_imports_every_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alscout.apps.cli import main
    from alscout.trainer.al.oracle import FleetOracle
    from alscout.trainer.data.images import read_still
    from alscout.trainer.fleet.pool import LabelPool

    pool = _still_pool(tmp_path)
    cycle = tmp_path / "cycle01"
    oracle = FleetOracle(pool)
    with pytest.raises(LabelingPending, match="export-tasks") as pending:
        oracle.label([2, 0], cycle)
    assert "2 of 2 frames" in str(pending.value)
    root = cycle / "label_pool"
    items = LabelPool(root).items
    assert [item.item_id for item in items] == [22, 20] and not any(i.labeled for i in items)
    stored = read_still(LabelPool(root).image_path(items[0]))
    assert (stored == read_still(pool[2].source)).all()  # the frame itself, lossless
    assert items[0].recording_id == "cam_7"

    tasks = tmp_path / "tasks"
    assert main(["fleet", "export-tasks", "--pool", str(root), "--out", str(tasks)]) == 0
    assert "images=2" in capsys.readouterr().out
    drawn = {22: [3.0, 4.0, 12.0, 30.0]}  # frame 20 is labeled as holding nobody
    first = tmp_path / "first.json"
    first.write_text(json.dumps(_labels_from_tasks(tasks, drawn, {22})))
    assert main(["fleet", "import-labels", "--pool", str(root), str(first)]) == 0
    with pytest.raises(LabelingPending, match="1 of 2 frames"):
        oracle.label([2, 0], cycle)  # a resumed run waits for the rest

    rest = tmp_path / "rest.json"
    rest.write_text(json.dumps(_labels_from_tasks(tasks, drawn, {20})))
    assert main(["fleet", "import-labels", "--pool", str(root), str(rest)]) == 0
    records = oracle.label([2, 0], cycle)
    assert [r.image_id for r in records] == [22, 20]
    assert [(b.x, b.y, b.w, b.h) for b in records[0].boxes] == [(3.0, 4.0, 12.0, 30.0)]
    assert records[1].boxes == ()
    assert records[0].source == pool[2].source  # training reads the pool's own frame


def test_fleet_oracle_refuses_a_label_pool_of_other_frames(tmp_path: Path) -> None:
    from alscout.trainer.al.oracle import FleetOracle

    oracle = FleetOracle(_still_pool(tmp_path))
    with pytest.raises(LabelingPending):
        oracle.label([0, 1], tmp_path / "c")
    with pytest.raises(DataError, match="other frames"):
        oracle.label([0, 2], tmp_path / "c")
