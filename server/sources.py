"""Where ``alscout stream`` gets its frames: a video file, an image folder, an MCAP file
(ROS 2 ``sensor_msgs/msg/Image`` and ``CompressedImage``), a recording in S3-compatible
storage (``s3://bucket/key``: :mod:`alscout.server.s3_source`) or a live camera / RTSP URL.

Every source yields :class:`SourceFrame` records in frame order, each with a 0-based
frame index and a capture timestamp (ns since the epoch, 0 when unknown). JPEG/PNG
files and compressed ROS images are sent as stored (their bytes), BMP files as raw
pixels; decoded frames (video, cameras, raw ROS images) go as raw
``bgr8``/``rgb8``/``gray8`` pixels by default, so nothing is lost to re-encoding.
A missing or unreadable source is a :class:`DataError` naming it. Choices:
``docs/operations.md``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from alscout.errors import DataError, InvalidInputError
from alscout.files import frame_files, natural_key

if TYPE_CHECKING:
    from alscout.server.client_progress import StreamFrame

__all__ = [
    "SourceFrame",
    "FrameSource",
    "ImageFolderSource",
    "VideoFileSource",
    "McapSource",
    "CameraSource",
    "open_source",
    "natural_key",
    "paced",
    "IMAGE_SUFFIXES",
    "ROS_IMAGE_TYPES",
]

log = logging.getLogger(__name__)

#: file suffix -> encoding of the images an image folder sends as stored (others: raw)
IMAGE_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
ROS_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: how decoded frames travel: "raw" (lossless, no encoding work), "jpeg" or "png"
FRAME_ENCODINGS = ("raw", "jpeg", "png")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
#: ROS raw image encodings -> (pixel format sent, channels in the message)
_ROS_RAW = {"rgb8": ("rgb8", 3), "bgr8": ("bgr8", 3), "mono8": ("gray8", 1), "8uc1": ("gray8", 1)}
_ROS_ALPHA = {"rgba8": ("rgb8", cv2.COLOR_RGBA2RGB), "bgra8": ("bgr8", cv2.COLOR_BGRA2BGR)}


@dataclass(frozen=True)
class SourceFrame:
    """One frame as the client sends it (the fields of ``client.StreamFrame``).

    ``image``: encoded bytes or ``height * width * channels`` raw bytes, row-major.
    ``encoding``: "jpeg" | "png" | "raw"; raw frames set ``width``, ``height`` (pixels)
    and ``pixel_format`` ("rgb8" | "bgr8" | "gray8"). ``capture_time_ns``: ns since the
    epoch, 0 if unknown. ``metadata``: where the frame came from (file, topic, ...).
    """

    frame_index: int
    image: bytes
    encoding: str
    width: int = 0
    height: int = 0
    pixel_format: str = ""
    capture_time_ns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def to_stream_frame(self) -> StreamFrame:
        """The frame as the clients send it (:class:`~alscout.server.client.StreamFrame`)."""
        from alscout.server.client_progress import StreamFrame

        return StreamFrame(
            frame_index=self.frame_index,
            image=self.image,
            encoding=self.encoding,
            width=self.width,
            height=self.height,
            pixel_format=self.pixel_format,
            capture_time_ns=self.capture_time_ns,
            metadata=self.metadata,
        )


class FrameSource:
    """Base of the sources: iterate for frames; ``total`` is the frame count if known."""

    name: str = ""
    total: int | None = None

    def __iter__(self) -> Iterator[SourceFrame]:
        raise NotImplementedError  # pragma: no cover  # every source overrides it

    def close(self) -> None:
        """Release the device or file (sources that hold one override this)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageFolderSource(FrameSource):
    """The image files of a folder in natural name order (:func:`alscout.files.frame_files`,
    the order training and evaluation number them in).

    JPEG and PNG files are sent as stored; other images (BMP) are decoded and sent as raw
    ``bgr8`` pixels, so every file keeps its frame index. Frame indices count the images
    from 0; the file name goes in metadata ``file``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: no such folder")
        self.files = frame_files(self.folder)
        self.name = str(self.folder)
        self.total = len(self.files)

    def __iter__(self) -> Iterator[SourceFrame]:
        for index, path in enumerate(self.files):
            meta = {"file": path.name}
            encoding = IMAGE_SUFFIXES.get(path.suffix.lower())
            if encoding is None:
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise DataError(f"{path}: not a readable image (OpenCV could not decode it)")
                yield _pixels_frame(index, bgr, "bgr8", 0, meta, "raw", 95)
                continue
            try:
                data = path.read_bytes()
            except OSError as error:
                raise DataError(f"{path}: cannot read the image: {error}") from error
            yield SourceFrame(index, data, encoding, metadata=meta)


class _CaptureSource(FrameSource):
    """Frames decoded by OpenCV (video files, cameras), sent as ``frame_encoding``."""

    def __init__(self, capture: cv2.VideoCapture, frame_encoding: str, jpeg_quality: int):
        if frame_encoding not in FRAME_ENCODINGS:
            raise InvalidInputError(
                f"frame_encoding must be one of {FRAME_ENCODINGS}, got {frame_encoding!r}"
            )
        if not 1 <= jpeg_quality <= 100:
            raise InvalidInputError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        self.capture = capture
        self.frame_encoding = frame_encoding
        self.jpeg_quality = jpeg_quality

    def _frame(self, index: int, bgr: np.ndarray, stamp_ns: int, meta: dict[str, str]):
        return _pixels_frame(
            index, bgr, "bgr8", stamp_ns, meta, self.frame_encoding, self.jpeg_quality
        )

    def close(self) -> None:
        self.capture.release()


class VideoFileSource(_CaptureSource):
    """Every frame of a video file OpenCV can read, numbered from 0 as in the file.

    ``start_time_ns``: when the first frame was captured (ns since the epoch); frames
    then carry it plus their position in the video. None: capture time unknown (0).
    The position in the video always goes in metadata ``video_time_ms``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        start_time_ns: int | None = None,
        frame_encoding: str = "raw",
        jpeg_quality: int = 95,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such video file")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise DataError(f"{self.path}: OpenCV cannot open it as a video")
        super().__init__(capture, frame_encoding, jpeg_quality)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None
        self.name = str(self.path)
        self.start_time_ns = start_time_ns

    def __iter__(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                break
            position_ms = float(self.capture.get(cv2.CAP_PROP_POS_MSEC))
            stamp = (
                0 if self.start_time_ns is None else self.start_time_ns + round(position_ms * 1e6)
            )
            yield self._frame(index, bgr, stamp, {"video_time_ms": f"{position_ms:.3f}"})
            index += 1
        if index == 0:
            raise DataError(f"{self.path}: the video has no readable frame")


class CameraSource(_CaptureSource):
    """A live camera (device index) or network stream (RTSP/HTTP URL) via OpenCV.

    Frames are stamped with the host clock when grabbed. Runs until the stream ends,
    ``max_frames`` frames, or the caller stops iterating.
    """

    def __init__(
        self,
        device: int | str,
        *,
        max_frames: int | None = None,
        frame_encoding: str = "raw",
        jpeg_quality: int = 95,
    ) -> None:
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            capture.release()
            raise DataError(f"camera {device!r}: OpenCV cannot open it (no device or no stream)")
        super().__init__(capture, frame_encoding, jpeg_quality)
        self.name = f"camera {device}"
        self.max_frames = max_frames
        self.total = max_frames

    def __iter__(self) -> Iterator[SourceFrame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            ok, bgr = self.capture.read()
            stamp = time.time_ns()
            if not ok:
                log.info("camera stream ended source=%s frames=%d", self.name, index)
                return
            yield self._frame(index, bgr, stamp, {})
            index += 1


class McapSource(FrameSource):
    """ROS 2 images of one topic of an MCAP file, in log-time order.

    ``topic``: the topic to read; None picks the first topic (by name) whose schema is
    ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``. Capture time is
    the message header's stamp (the log time when the stamp is zero). Raw images in
    rgb8/bgr8/mono8 travel as raw pixels, rgba8/bgra8 lose their alpha channel; other
    encodings are a :class:`DataError`.
    """

    def __init__(self, path: str | Path, *, topic: str | None = None) -> None:
        from mcap.reader import make_reader  # lazy: only MCAP streams need it

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such MCAP file")
        try:
            with self.path.open("rb") as stream:
                summary = make_reader(stream).get_summary()
        except Exception as error:  # any parser failure means a bad file
            raise DataError(f"{self.path}: not a readable MCAP file: {error}") from error
        if summary is None:
            raise DataError(f"{self.path}: the MCAP file has no summary section; re-index it")
        image_topics = {
            channel.topic: channel.id
            for channel in summary.channels.values()
            if summary.schemas.get(channel.schema_id) is not None
            and summary.schemas[channel.schema_id].name in ROS_IMAGE_TYPES
        }
        if topic is None:
            if not image_topics:
                raise DataError(f"{self.path}: no topic of type {' or '.join(ROS_IMAGE_TYPES)}")
            topic = sorted(image_topics)[0]
        elif topic not in image_topics:
            raise DataError(
                f"{self.path}: topic {topic!r} is not an image topic; "
                f"image topics: {sorted(image_topics) or 'none'}"
            )
        self.topic = topic
        self.name = f"{self.path}:{topic}"
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        self.total = counts.get(image_topics[topic])

    def __iter__(self) -> Iterator[SourceFrame]:
        from mcap.exceptions import McapError
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        index = 0
        with self.path.open("rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            messages = reader.iter_decoded_messages(topics=[self.topic])
            while True:
                try:
                    schema, _, message, ros = next(messages)
                except StopIteration:
                    return
                except McapError as error:  # truncated or corrupt past the summary
                    raise DataError(f"{self.name}: message {index}: {error}") from error
                # the topic was chosen among channels with a schema (__init__)
                assert schema is not None
                stamp = ros.header.stamp.sec * 1_000_000_000 + ros.header.stamp.nanosec
                meta = {"topic": self.topic, "frame_id": ros.header.frame_id}
                yield self._frame(index, schema.name, ros, stamp or message.log_time, meta)
                index += 1

    def _frame(self, index: int, kind: str, ros: Any, stamp: int, meta: dict[str, str]):
        if kind == "sensor_msgs/msg/CompressedImage":
            fmt = ros.format.lower()
            encoding = "png" if "png" in fmt else "jpeg" if ("jpeg" in fmt or "jpg" in fmt) else ""
            if not encoding:
                raise DataError(
                    f"{self.name}: message {index}: compressed format {ros.format!r} is "
                    "neither JPEG nor PNG"
                )
            return SourceFrame(
                index, bytes(ros.data), encoding, capture_time_ns=stamp, metadata=meta
            )
        pixels = self._raw_pixels(index, ros)
        # _raw_pixels refused any encoding in neither table
        pixel_format = (_ROS_RAW.get(ros.encoding.lower()) or _ROS_ALPHA[ros.encoding.lower()])[0]
        return _pixels_frame(index, pixels, pixel_format, stamp, meta, "raw", 95)

    def _raw_pixels(self, index: int, ros: Any) -> np.ndarray:
        encoding = ros.encoding.lower()
        if encoding in _ROS_RAW:
            channels = _ROS_RAW[encoding][1]
        elif encoding in _ROS_ALPHA:
            channels = 4
        else:
            raise DataError(
                f"{self.name}: message {index}: image encoding {ros.encoding!r} is not "
                f"supported; use one of {sorted(_ROS_RAW) + sorted(_ROS_ALPHA)}"
            )
        height, width, step = int(ros.height), int(ros.width), int(ros.step)
        data = np.frombuffer(bytes(ros.data), dtype=np.uint8)
        if width < 1 or height < 1 or step < width * channels or data.size < step * height:
            raise DataError(
                f"{self.name}: message {index}: {width}x{height} {ros.encoding} with step "
                f"{step} does not fit its {data.size} data bytes"
            )
        rows = data[: step * height].reshape(height, step)[:, : width * channels]
        pixels: np.ndarray = rows.reshape(height, width, channels)
        if encoding in _ROS_ALPHA:
            pixels = cv2.cvtColor(pixels, _ROS_ALPHA[encoding][1])
        return pixels


def _pixels_frame(
    index: int,
    pixels: np.ndarray,
    pixel_format: str,
    stamp_ns: int,
    meta: dict[str, str],
    frame_encoding: str,
    jpeg_quality: int,
) -> SourceFrame:
    """A frame of decoded ``[H, W, C]`` uint8 pixels, raw or encoded as asked."""
    height, width = pixels.shape[:2]
    if frame_encoding == "raw":
        data = np.ascontiguousarray(pixels).tobytes()
        return SourceFrame(index, data, "raw", width, height, pixel_format, stamp_ns, meta)
    if pixel_format == "rgb8":  # OpenCV encodes BGR
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if frame_encoding == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if frame_encoding == "jpeg" else ".png", pixels, params)
    if not ok:  # pragma: no cover  # OpenCV encodes any uint8 image
        raise DataError(f"frame {index}: OpenCV could not encode it as {frame_encoding}")
    return SourceFrame(
        index, encoded.tobytes(), frame_encoding, capture_time_ns=stamp_ns, metadata=meta
    )


def open_source(
    spec: str | Path,
    *,
    topic: str | None = None,
    max_frames: int | None = None,
    frame_encoding: str = "raw",
    start_time_ns: int | None = None,
) -> FrameSource:
    """The source ``spec`` names: a folder, an ``.mcap`` file, a video file, a recording in
    S3 (``s3://bucket/key``, read from a local copy), a camera index ("0") or a URL
    ("rtsp://..."). Raises :class:`DataError` when it does not exist.
    """
    text = str(spec)
    if text.startswith("s3://"):
        from alscout.server.s3_source import S3RecordingSource

        def open_local(local: Path) -> FrameSource:
            return open_source(
                local,
                topic=topic,
                max_frames=max_frames,
                frame_encoding=frame_encoding,
                start_time_ns=start_time_ns,
            )

        return S3RecordingSource(text, open_local)
    path = Path(text)
    if path.is_dir():
        return ImageFolderSource(path)
    if path.suffix.lower() == ".mcap":
        return McapSource(path, topic=topic)
    if path.is_file():
        return VideoFileSource(path, start_time_ns=start_time_ns, frame_encoding=frame_encoding)
    if text.isdigit():
        return CameraSource(int(text), max_frames=max_frames, frame_encoding=frame_encoding)
    if _URL.match(text):
        return CameraSource(text, max_frames=max_frames, frame_encoding=frame_encoding)
    raise DataError(
        f"{text}: no such file or folder (a source is a video file, an image folder, "
        "an .mcap file, a camera index or a stream URL)"
    )


def paced(frames: Iterable[SourceFrame], fps: float | None) -> Iterator[SourceFrame]:
    """``frames`` at most ``fps`` per second (None or 0: as fast as they come)."""
    if fps is not None and fps < 0:
        raise InvalidInputError(f"fps must be >= 0, got {fps}")
    if not fps:
        yield from frames
        return
    period = 1.0 / fps
    due = time.monotonic()
    for frame in frames:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = due
        due = now + period  # from the release time: a stall does not cause a burst
        yield frame
