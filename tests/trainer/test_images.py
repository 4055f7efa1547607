"""load_image: still images, video frames with a sequential cache, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError
from alscout.trainer.data import images
from alscout.trainer.data.annotations import ImageRecord
from alscout.trainer.data.images import VideoReader, clear_video_cache, load_image, video_info


def _write_video(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48)) -> None:
    """Frames whose mean grey level encodes the frame number (20 * i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i % 256, np.uint8))
    writer.release()


def test_still_image_is_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((10, 20, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    image = load_image(ImageRecord(0, tmp_path / "a.png", 20, 10))
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [0, 0, 255]


def test_missing_and_corrupt_still_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.png"):
        load_image(ImageRecord(0, tmp_path / "nope.png", 1, 1))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png.*not a readable image"):
        load_image(ImageRecord(0, tmp_path / "bad.png", 1, 1))


def test_video_frames_by_number_in_any_order(tmp_path: Path) -> None:
    clear_video_cache()
    path = tmp_path / "v.avi"
    _write_video(path)
    assert video_info(path)[:3] == (12, 64, 48)
    for index in [0, 1, 2, 7, 3, 11, 0]:
        frame = load_image(ImageRecord(index, path, 64, 48, frame=index))
        assert frame.shape == (48, 64, 3)
        assert abs(float(frame.mean()) - 20 * index) < 4, index


def test_sequential_reads_do_not_seek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.avi"
    _write_video(path)
    reader = VideoReader(path)
    seeks: list[int] = []
    original = reader._capture

    class Spy:
        def set(self, prop: int, value: float) -> bool:
            seeks.append(int(value))
            return original.set(prop, value)

        def read(self) -> tuple[bool, np.ndarray]:
            return original.read()

        def release(self) -> None:
            original.release()

    reader._capture = Spy()  # type: ignore[assignment]
    for i in range(5):
        reader.read(i)
    assert seeks == []
    reader.read(9)
    reader.read(10)
    assert seeks == [9]
    reader.close()


def test_frame_past_end_and_missing_video(tmp_path: Path) -> None:
    clear_video_cache()
    path = tmp_path / "v.avi"
    _write_video(path, frames=5)
    with pytest.raises(DataError, match=r"v\.avi.*frame 5"):
        load_image(ImageRecord(0, path, 64, 48, frame=5))
    # the reader recovers after a failed read
    assert load_image(ImageRecord(0, path, 64, 48, frame=4)).shape == (48, 64, 3)
    with pytest.raises(DataError, match=r"missing\.avi"):
        load_image(ImageRecord(0, tmp_path / "missing.avi", 1, 1, frame=0))
    (tmp_path / "junk.avi").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"junk\.avi"):
        load_image(ImageRecord(0, tmp_path / "junk.avi", 1, 1, frame=0))


def test_cache_is_bounded(tmp_path: Path) -> None:
    clear_video_cache()
    for i in range(images._MAX_OPEN_VIDEOS + 2):
        path = tmp_path / f"v{i}.avi"
        _write_video(path, frames=2)
        load_image(ImageRecord(0, path, 64, 48, frame=0))
    assert len(images._cache) == images._MAX_OPEN_VIDEOS


def test_real_video_frame(pets_dir: Path) -> None:
    frame = load_image(ImageRecord(0, pets_dir / "vtest.avi", 480, 360, frame=100))
    assert frame.shape == (360, 480, 3)
    assert frame.std() > 10  # a real scene, not a blank frame
