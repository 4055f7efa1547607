"""MOTChallenge gt.txt with frames from a video or an image folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError, InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.formats import read_dataset
from alscout.trainer.data.images import clear_video_cache, load_image
from alscout.trainer.data.mot import read_mot, write_mot


def _video(path: Path, frames: int = 4) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    clear_video_cache()
    return path


def _folder(path: Path, frames: int = 3) -> Path:
    path.mkdir(parents=True)
    for i in range(frames):
        cv2.imwrite(str(path / f"{i + 1:06d}.jpg"), np.full((48, 64, 3), 50 * i, np.uint8))
    return path


GT = """1,1,10,5,10,20,1,-1,-1,-1
1,2,-4,5,10,20,1,-1,-1,-1
3,1,12,6,10,20,0,-1,-1,-1

4,3,1.5,2.5,3,4,1,-1,-1,-1
"""


def test_video_frames_are_zero_based(tmp_path: Path) -> None:
    (tmp_path / "gt.txt").write_text(GT)
    data = read_mot(tmp_path / "gt.txt", _video(tmp_path / "v.avi"))
    assert len(data) == 4 and data.name == "v"
    assert [r.frame for r in data] == [0, 1, 2, 3]
    assert [len(r.boxes) for r in data] == [2, 0, 1, 1]
    first = data[0]
    assert first.boxes[0] == Box(10, 5, 10, 20, track_id=1)
    assert first.boxes[1] == Box(0, 5, 6, 20, track_id=2)  # clipped at the left edge
    assert data[2].boxes[0].ignore  # conf 0
    assert (first.width, first.height) == (64, 48)
    assert abs(load_image(data[3]).mean() - 120) < 4  # frame 4 in the file = frame index 3


def test_image_folder_and_mot_layout(tmp_path: Path) -> None:
    seq = tmp_path / "SEQ-01"
    _folder(seq / "img1")
    (seq / "gt").mkdir()
    (seq / "gt" / "gt.txt").write_text(
        "2,5,1,1,10,20,1,1,0.9\n3,6,1,1,10,20,1,7,1\n3,7,1,1,5,5,1,3,1\n"
    )
    data = read_mot(seq / "gt" / "gt.txt")  # frames found in SEQ/img1
    assert data.name == "SEQ-01" and [r.frame for r in data] == [None] * 3
    assert data[1].source == seq / "img1" / "000002.jpg"
    assert [b.track_id for b in data[1].boxes] == [5]
    # 9 columns: class 7 (static person) is ignored, class 3 (car) dropped
    assert [(b.track_id, b.ignore) for b in data[2].boxes] == [(6, True)]


def test_unpadded_frame_names_number_frames_in_natural_order(tmp_path: Path) -> None:
    """gt frame ``f`` is the ``f``-th image in natural order: ``10.jpg`` is frame 10,
    not frame 3 (plain sorting reads 1, 10, 11, 12, 2, ...)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(1, 13):
        cv2.imwrite(str(frames / f"{i}.jpg"), np.full((48, 64, 3), 20 * i, np.uint8))
    (tmp_path / "gt.txt").write_text("2,1,1,1,10,20,1,-1,-1,-1\n10,2,1,1,10,20,1,-1,-1,-1\n")
    data = read_mot(tmp_path / "gt.txt", frames)
    assert [Path(r.source).name for r in data] == [f"{i}.jpg" for i in range(1, 13)]
    assert [b.track_id for b in data[1].boxes] == [1]
    assert [b.track_id for b in data[9].boxes] == [2]
    assert abs(load_image(data[9]).mean() - 200) < 4  # the pixels of 10.jpg


def test_frame_folders_read_in_one_order_by_every_tool(tmp_path: Path) -> None:
    from alscout.export.frames import read_frames
    from alscout.server.sources import ImageFolderSource

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (1, 2, 10, 11):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    (tmp_path / "gt.txt").write_text("1,1,1,1,10,20,1,-1,-1,-1\n")
    mot = [Path(r.source).name for r in read_mot(tmp_path / "gt.txt", frames)]
    streamed = [f.metadata["file"] for f in ImageFolderSource(frames)]
    exported = [int(f[0, 0, 0]) // 20 for f in read_frames(frames)]
    assert (
        mot
        == streamed
        == [f"f{i}.png" for i in exported]
        == ["f1.png", "f2.png", "f10.png", "f11.png"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("9,1,1,1,5,5,1\n", "frame 9 is past the last frame"),
        ("1,1,100,1,5,5,1\n", "outside"),
        ("1,1,1,1,5\n", "at least 6 columns"),
        ("0,1,1,1,5,5,1\n", "integer >= 1"),
        ("1,a,1,1,5,5,1\n", "non-numeric"),
    ],
)
def test_bad_rows_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "gt.txt").write_text(text)
    with pytest.raises(DataError, match=rf"gt\.txt.*{message}"):
        read_mot(tmp_path / "gt.txt", _folder(tmp_path / "f"))


def test_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "gt.txt").write_text("1,1,1,1,5,5,1\n")
    with pytest.raises(DataError, match=r"nothere\.avi"):
        read_mot(tmp_path / "gt.txt", tmp_path / "nothere.avi")
    with pytest.raises(DataError, match="no img1"):
        read_mot(tmp_path / "gt.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        read_mot(tmp_path / "gt.txt", tmp_path / "empty")


def test_write_read_roundtrip(tmp_path: Path) -> None:
    video = _video(tmp_path / "v.avi")
    (tmp_path / "gt.txt").write_text(GT)
    data = read_mot(tmp_path / "gt.txt", video)
    out = write_mot(data, tmp_path / "out" / "gt.txt")
    again = read_dataset(out, images=video)
    assert again.images == data.images
    # boxes without a track get fresh ids
    stills = Dataset([ImageRecord(0, Path("a.png"), 10, 10, (Box(1, 1, 2, 2), Box(2, 2, 2, 2)))])
    lines = write_mot(stills, tmp_path / "s.txt").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines] == [["1", "1"], ["1", "2"]]
    two = Dataset(
        [ImageRecord(0, Path("a.avi"), 9, 9, frame=0), ImageRecord(1, Path("b.avi"), 9, 9, frame=0)]
    )
    with pytest.raises(InvalidInputError):
        write_mot(two, tmp_path / "t.txt")


def test_real_pets_video(pets_dir: Path) -> None:
    data = read_mot(pets_dir / "gt.txt", pets_dir / "vtest.avi")
    assert len(data) == 795 and data.num_boxes == 4650
    assert (data[0].width, data[0].height) == (480, 360)
    assert all(b.x >= 0 and b.x2 <= 480 and b.y2 <= 360 for r in data for b in r.boxes)
    assert len({b.track_id for r in data for b in r.boxes}) == 19
