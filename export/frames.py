"""Real frames for verification and INT8 calibration: a folder of images or a video file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from alscout.errors import DataError
from alscout.files import frame_files

__all__ = ["iter_frames", "read_frames"]

log = logging.getLogger(__name__)


def iter_frames(
    source: str | Path, *, limit: int | None = None, stride: int = 1
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames ``[H, W, 3]`` from ``source``.

    ``source``: a folder (its images in natural name order, :func:`alscout.files.frame_files`)
    or a video file (frames in order).
    Every ``stride``-th frame is kept, at most ``limit`` of them. A missing source, an
    unreadable image or a video that yields nothing raises :class:`DataError`.
    """
    if stride < 1:
        raise DataError(f"{source}: frame stride must be >= 1, got {stride}")
    path = Path(source)
    if path.is_dir():
        frames = _folder_frames(path, stride)
    elif path.is_file():
        frames = _video_frames(path, stride)
    else:
        raise DataError(f"{path}: no such folder or video file")
    if limit is not None and limit < 1:
        raise DataError(f"{source}: frame limit must be >= 1, got {limit}")
    kept = 0
    for frame in frames:
        kept += 1
        yield frame
        if limit is not None and kept >= limit:
            return
    if kept == 0:
        raise DataError(f"{path}: holds no frames")


def read_frames(
    source: str | Path, *, limit: int | None = None, stride: int = 1
) -> list[np.ndarray]:
    """:func:`iter_frames` as a list."""
    return list(iter_frames(source, limit=limit, stride=stride))


def _folder_frames(folder: Path, stride: int) -> Iterator[np.ndarray]:
    for file in frame_files(folder)[::stride]:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{file}: not a readable image")
        yield np.ascontiguousarray(image[:, :, ::-1])


def _video_frames(video: Path, stride: int) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DataError(f"{video}: not a readable video (OpenCV could not open it)")
    try:
        index = 0
        # grab() advances without converting the skipped frames to BGR images.
        while capture.grab():
            if index % stride == 0:
                ok, frame = capture.retrieve()
                if not ok:
                    return
                yield np.ascontiguousarray(frame[:, :, ::-1])
            index += 1
    finally:
        capture.release()
