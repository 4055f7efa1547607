"""Pixels of an :class:`ImageRecord`: still images through OpenCV, video frames by number.

Video frames are read through ``cv2.VideoCapture`` kept open in a small cache, so that
reading a video front to back decodes each frame once instead of seeking for every
frame. A seek happens only when the wanted frame is not the next one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from alscout.errors import DataError
from alscout.trainer.data.annotations import ImageRecord

__all__ = ["load_image", "read_still", "VideoReader", "video_info", "clear_video_cache"]

log = logging.getLogger(__name__)

#: How many videos stay open at once; readers beyond this are closed, oldest first.
_MAX_OPEN_VIDEOS = 4


def read_still(path: Path | str) -> np.ndarray:
    """Read an image file. Returns ``[H, W, 3]`` uint8 RGB.

    Raises :class:`DataError` naming the file when it is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    # imdecode over a byte buffer also handles non-ASCII paths on every platform.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class VideoReader:
    """Random access to the frames of one video file, cheap for sequential reads.

    ``read(i)`` returns frame ``i`` (0-based) as ``[H, W, 3]`` uint8 RGB. Reading
    ``i + 1`` after ``i`` decodes one frame; any other order seeks first.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise DataError(f"{self.path}: not a readable video (OpenCV could not open it)")
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._next = 0  # index of the frame the next plain read() returns
        self._lock = threading.Lock()

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as ``[H, W, 3]`` uint8 RGB."""
        if index < 0:
            raise DataError(f"{self.path}: frame {index} is negative")
        with self._lock:
            if index != self._next:
                log.debug("seek path=%s from=%d to=%d", self.path, self._next, index)
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = self._capture.read()
            if not ok or frame is None:
                self._next = -1  # position unknown after a failed read: seek next time
                raise DataError(
                    f"{self.path}: cannot read frame {index} "
                    f"(the video reports {self.frame_count} frames)"
                )
            self._next = index + 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release the underlying capture."""
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_cache: OrderedDict[Path, VideoReader] = OrderedDict()
_cache_lock = threading.Lock()


def _reader_for(path: Path) -> VideoReader:
    key = path.resolve() if path.exists() else path
    with _cache_lock:
        reader = _cache.get(key)
        if reader is not None:
            _cache.move_to_end(key)
            return reader
        reader = VideoReader(path)
        _cache[key] = reader
        while len(_cache) > _MAX_OPEN_VIDEOS:
            _, oldest = _cache.popitem(last=False)
            oldest.close()
        return reader


def clear_video_cache() -> None:
    """Close every cached video (e.g. after a video file was rewritten)."""
    with _cache_lock:
        while _cache:
            _, reader = _cache.popitem()
            reader.close()


def video_info(path: Path | str) -> tuple[int, int, int, float]:
    """``(frame_count, width, height, fps)`` of a video file, as OpenCV reports them."""
    reader = _reader_for(Path(path))
    return reader.frame_count, reader.width, reader.height, reader.fps


def load_image(record: ImageRecord) -> np.ndarray:
    """The pixels of one record: ``[H, W, 3]`` uint8 RGB.

    A still image is read from ``record.source``; a video frame is frame
    ``record.frame`` (0-based) of the video ``record.source``. Raises
    :class:`DataError` naming the file on a missing or unreadable image or video, or
    a frame past the end.
    """
    path = Path(record.source)
    if record.frame is None:
        return read_still(path)
    return _reader_for(path).read(int(record.frame))
