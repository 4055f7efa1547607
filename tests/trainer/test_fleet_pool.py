from __future__ import annotations

import json

import pytest

from alscout.errors import DataError
from alscout.trainer.data.annotations import Box
from alscout.trainer.fleet.pool import LabelPool, PoolItem


def item(item_id: int, frame: int = 0, boxes=None) -> PoolItem:
    return PoolItem(
        item_id=item_id,
        file=f"images/rec/cam/{frame:012d}.png",
        recording_id="rec",
        camera_id="cam",
        frame_index=frame,
        width=64,
        height=48,
        phash="00ff00ff00ff00ff",
        sha256="0" * 64,
        source="sink/rec/cam/x.png.json",
        boxes=boxes,
    )


def test_empty_pool_and_first_write(tmp_path):
    pool = LabelPool(tmp_path / "pool")
    assert pool.items == [] and pool.generation == 0
    assert not pool.manifest_path.exists()
    with pool.edit() as state:
        state.items.append(item(1))
    assert pool.generation == 1
    reopened = LabelPool(tmp_path / "pool")
    assert reopened.items == [item(1)]
    assert reopened.generation == 1


def test_labels_round_trip_and_dataset(tmp_path):
    pool = LabelPool(tmp_path)
    boxes = (Box(1.0, 2.0, 10.0, 20.0), Box(5.0, 5.0, 8.0, 9.0, label="ignore", ignore=True))
    with pool.edit() as state:
        state.items.extend([item(1, 0), item(2, 30)])
    with pool.edit() as state:
        state.items[1] = LabelPool.with_labels(state.items[1], boxes, "labels.json")
        state.items[0] = LabelPool.with_labels(state.items[0], (), "labels.json")
    reopened = LabelPool(tmp_path)
    assert reopened.items[1].boxes == boxes
    assert reopened.items[0].boxes == () and reopened.items[0].labeled
    assert [i.item_id for i in reopened.labeled()] == [1, 2]
    data = reopened.to_dataset()
    assert [r.image_id for r in data] == [1, 2]
    assert data[1].boxes == boxes
    assert data[1].source == tmp_path / "images/rec/cam/000000000030.png"
    assert (data[1].width, data[1].height) == (64, 48)


def test_a_failed_edit_writes_nothing(tmp_path):
    pool = LabelPool(tmp_path)
    with pool.edit() as state:
        state.items.append(item(1))
    before = pool.manifest_path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), pool.edit() as state:
        state.items.append(item(2))
        raise RuntimeError("boom")
    assert pool.manifest_path.read_bytes() == before
    assert LabelPool(tmp_path).items == [item(1)]
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temporary left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{truncated", "unreadable pool manifest"),
        (json.dumps({"format": 99}), "pool format 99"),
        (json.dumps([1, 2]), "pool format None"),
        (
            json.dumps(
                {
                    "format": 1,
                    "generation": 1,
                    "items": [{"item_id": 1}],
                    "duplicates": [],
                    "rejected": [],
                    "label_imports": [],
                }
            ),
            "malformed pool manifest",
        ),
    ],
)
def test_corrupt_manifest_is_named(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        LabelPool(tmp_path)
    assert str(tmp_path / "manifest.json") in str(caught.value)


def test_write_image_is_atomic_and_creates_folders(tmp_path):
    pool = LabelPool(tmp_path)
    path = pool.write_image("images/r/c/000000000001.png", b"png bytes")
    assert path.read_bytes() == b"png bytes"
    assert [p.name for p in path.parent.iterdir()] == ["000000000001.png"]
