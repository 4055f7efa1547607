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
