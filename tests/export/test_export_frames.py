from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError
from alscout.export.frames import iter_frames, read_frames


@pytest.fixture
def folder(tmp_path) -> Path:
    for i in range(5):
        image = np.full((8, 10, 3), (i * 10, 100, 200), np.uint8)  # RGB
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), image[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not a frame")
    return tmp_path


def test_folder_frames_are_rgb_in_name_order(folder):
    frames = read_frames(folder)
    assert len(frames) == 5
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40]
    assert frames[0][0, 0].tolist() == [0, 100, 200]


def test_unpadded_names_are_read_in_natural_order(tmp_path):
    for i in (1, 2, 10, 11):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 10, 3), i, np.uint8))
    assert [int(f[0, 0, 0]) for f in read_frames(tmp_path)] == [1, 2, 10, 11]


def test_limit_and_stride(folder):
    assert [int(f[0, 0, 0]) for f in read_frames(folder, stride=2)] == [0, 20, 40]
    assert [int(f[0, 0, 0]) for f in read_frames(folder, stride=2, limit=2)] == [0, 20]


def test_errors_are_data_errors(folder, tmp_path):
    with pytest.raises(DataError, match="no such"):
        read_frames(tmp_path / "missing")
    (folder / "zz.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="not a readable image"):
        read_frames(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        read_frames(empty)
    with pytest.raises(DataError, match="stride"):
        read_frames(folder, stride=0)
    bad_video = tmp_path / "clip.avi"
    bad_video.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError):
        read_frames(bad_video)


def test_video_frames(pets_video):
    frames = list(iter_frames(pets_video, limit=3, stride=100))
    assert len(frames) == 3 and frames[0].shape == (360, 480, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])
