"""The paper's filters: small or oddly shaped boxes become ignore boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from alscout.errors import ConfigError, DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord, clip_to_image
from alscout.trainer.data.filters import BoxFilter, filter_boxes, filter_dataset, filter_record


def test_height_and_aspect_rules() -> None:
    rule = BoxFilter()
    boxes = [
        Box(0, 0, 20, 60),  # 0.333: kept
        Box(0, 0, 20, 49),  # too short
        Box(0, 0, 10, 50),  # aspect 0.2 exactly: kept (inclusive)
        Box(0, 0, 9, 50),  # 0.18: too thin
        Box(0, 0, 65, 100),  # 0.65 exactly: kept
        Box(0, 0, 70, 100),  # 0.7: too wide
        Box(0, 0, 30, 100, label="rider"),  # not a pedestrian
        Box(0, 0, 30, 100, ignore=True),  # stays ignore
    ]
    out = filter_boxes(boxes, rule)
    assert [b.ignore for b in out] == [False, True, False, True, False, True, True, True]
    assert [(b.x, b.w, b.h, b.label) for b in out] == [(b.x, b.w, b.h, b.label) for b in boxes]


def test_measured_at_training_resolution() -> None:
    # 2048x1024 stored, trained at 1024x512: a 60 px box becomes 30 px and is ignored
    record = ImageRecord(0, Path("a.png"), 2048, 1024, (Box(0, 0, 30, 60), Box(0, 0, 60, 120)))
    out = filter_record(record, BoxFilter(train_width=1024, train_height=512))
    assert [b.ignore for b in out.boxes] == [True, False]
    # a non-uniform resize changes the aspect ratio: 30/60 -> 60/60 = 1.0, too wide
    squeezed = filter_record(record, BoxFilter(train_width=4096, train_height=1024))
    assert [b.ignore for b in squeezed.boxes] == [True, True]
    assert [b.ignore for b in filter_record(record, BoxFilter()).boxes] == [False, False]


def test_at_input_scales_the_papers_minimum_with_the_input_height() -> None:
    rule = BoxFilter.at_input(360, 480)
    assert (rule.min_height, rule.train_width, rule.train_height) == (37.5, 480, 360)
    assert BoxFilter.at_input(480, 640).min_height == 50.0
    assert BoxFilter.at_input(240, 320, reference_height=240).min_height == 50.0
    record = ImageRecord(0, Path("f.jpg"), 960, 720, ())
    sx, sy = 480 / record.width, 360 / record.height
    assert rule.keeps(Box(0, 0, 30, 76), sx, sy)  # 38 px high at 480x360
    assert not rule.keeps(Box(0, 0, 30, 74), sx, sy)  # 37 px


def test_filter_dataset_keeps_order_and_names() -> None:
    data = Dataset(
        [
            ImageRecord(i, Path(f"{i}.png"), 640, 480, (Box(0, 0, 20, 40 + 10 * i),))
            for i in range(3)
        ],
        name="d",
    )
    out = filter_dataset(data)
    assert out.name == "d" and [r.image_id for r in out] == [0, 1, 2]
    assert [r.boxes[0].ignore for r in out] == [True, False, False]
    assert not data[0].boxes[0].ignore  # the input is left alone


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        BoxFilter(min_aspect=0.7, max_aspect=0.6)
    with pytest.raises(ConfigError):
        BoxFilter(train_width=640)
    with pytest.raises(ConfigError):
        BoxFilter(min_height=-1)


def test_clip_to_image() -> None:
    assert clip_to_image(Box(-5, 10, 20, 30), 100, 100, "f") == Box(0, 10, 15, 30)
    assert clip_to_image(Box(1, 1, 2, 2), 10, 10, "f") == Box(1, 1, 2, 2)
    with pytest.raises(DataError, match=r"gt\.txt.*outside"):
        clip_to_image(Box(200, 10, 20, 30), 100, 100, "gt.txt")
    with pytest.raises(DataError, match="no area"):
        clip_to_image(Box(2, 10, 0, 30), 100, 100, "gt.txt")
